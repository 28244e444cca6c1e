use super::*;

#[test]
fn settings_that_would_silently_do_nothing_are_refused() {
    let err = |toml: &str| Config::from_toml(toml).and_then(|c| c.validate().map(|()| c));
    let e = err("[hooks]\nsecret = \"0123456789abcdef\"\nauthorize_rooms = [\"private:*\"]\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("authorize_url is empty"), "{e}");
    let e = err("[hooks]\nconnect_headers = [\"x-tenant\"]\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("connect_url is empty"), "{e}");
    let e = err("[rooms]\nidempotency_window_s = 18446744073709551615\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("more than a week"), "{e}");
    let e = err("[compression]\nlevel = 0\n").unwrap_err().to_string();
    assert!(e.contains("compression.level"), "{e}");
    assert!(err("[compression]\nlevel = 9\noff = [\"img:\"]\n").is_ok());
}

#[test]
fn a_toml_error_is_one_line_naming_the_line() {
    let e = Config::from_toml("[limits]\n\nmax_message_size = \"big\"\n").unwrap_err();
    let text = e.to_string();
    assert!(!text.contains('\n'), "{text}");
    assert!(
        text.contains("line 3 (max_message_size = \"big\"): invalid type: string \"big\""),
        "{text}"
    );
    let e = Config::from_toml("[limits]\nmax_mesage_size = 1\n").unwrap_err();
    let text = e.to_string();
    assert!(!text.contains('\n'), "{text}");
    assert!(
        text.contains("line 2 (max_mesage_size = 1): unknown field `max_mesage_size`"),
        "{text}"
    );
}

#[test]
fn defaults_are_valid() {
    Config::default().validate().unwrap();
}

#[test]
fn file_overrides_only_what_it_names() {
    let c = Config::from_toml("echo = true\n[limits]\nmax_message_size = 4096\n").unwrap();
    assert!(c.echo);
    assert_eq!(c.limits.max_message_size, 4096);
    assert_eq!(c.limits.max_frame_size, Limits::default().max_frame_size);
    assert_eq!(c.listen, Config::default().listen);
}

#[test]
fn unknown_key_is_an_error_naming_it() {
    let e = Config::from_toml("lisen = \"0.0.0.0:1\"\n").unwrap_err();
    assert!(e.to_string().contains("lisen"), "{e}");
}

#[test]
fn room_policies_by_longest_prefix() {
    let c = Config::from_toml(
        "[[rooms.policy]]\nprefix = \"ticker:\"\nslow_consumer = \"conflate\"\n\
         [[rooms.policy]]\nprefix = \"ticker:fx:\"\nslow_consumer = \"drop-oldest\"\n",
    )
    .unwrap();
    assert_eq!(c.rooms.policy("ticker:AAPL"), SlowPolicy::Conflate);
    assert_eq!(c.rooms.policy("ticker:fx:EURUSD"), SlowPolicy::DropOldest);
    assert_eq!(c.rooms.policy("chat:1"), SlowPolicy::Disconnect);
    assert!(
        Config::from_toml("[[rooms.policy]]\nprefix = \"a\"\nslow_consumer = \"nope\"\n").is_err()
    );
}

#[test]
fn frame_larger_than_message_is_rejected_with_fix() {
    let mut c = Config::default();
    c.limits.max_frame_size = 2 << 20;
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("raise max_message_size"), "{e}");
}

#[test]
fn one_peer_list_for_the_whole_cluster() {
    let list = vec![
        "n1=127.0.0.1:7401".to_owned(),
        "n2=127.0.0.1:7402".to_owned(),
        "n3=127.0.0.1:7403".to_owned(),
    ];
    for me in ["n1", "n2", "n3"] {
        let mut c = Config {
            node_id: me.into(),
            ..Config::default()
        };
        c.mesh.peers = list.clone();
        c.mesh.secret = "0123456789abcdef".into();
        c.validate().unwrap();
        let peers = c.mesh.peer_list(me).unwrap();
        assert_eq!(peers.others.len(), 2);
        assert!(peers.others.iter().all(|p| p.id != me));
        // Its own entry is its mesh address.
        let own = c.mesh.listen_addr(me).unwrap();
        assert_eq!(own.port(), 7400 + me[1..].parse::<u16>().unwrap());
    }
}

#[test]
fn mesh_needs_listen_secret_and_well_formed_peers() {
    let mut c = Config::default();
    c.mesh.peers = vec!["n2=127.0.0.1:7402".into()];
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("--mesh-listen"), "{e}");
    c.mesh.listen = Some("127.0.0.1:7401".parse().unwrap());
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("mesh.secret is not set"), "{e}");
    assert!(e.contains("RINGWAY_MESH_SECRET"), "{e}");
    c.mesh.secret = "short".into();
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("at least 16 bytes"), "{e}");
    c.mesh.secret = "0123456789abcdef".into();
    c.validate().unwrap();
    c.mesh.peers.push("n2=127.0.0.1:7403".into());
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("appears twice"), "{e}");
    c.mesh.peers = vec!["n2:127.0.0.1:7402".into()];
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("ID=HOST:PORT"), "{e}");
}

#[test]
fn a_nodes_own_peer_entry_is_named_as_such() {
    let mut c = Config {
        node_id: "n1".into(),
        ..Config::default()
    };
    c.mesh.secret = "0123456789abcdef".into();
    // A host name for its own address: said so, not "has no mesh address".
    c.mesh.peers = vec!["n1=localhost:7401".into(), "n2=127.0.0.1:7402".into()];
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("is not IP:PORT"), "{e}");
    // Its own entry on the client port: named as the peer entry, not mesh.listen.
    c.mesh.peers = vec!["n1=127.0.0.1:8080".into(), "n2=127.0.0.1:7402".into()];
    let e = c.validate().unwrap_err().to_string();
    assert!(
        e.contains("listen and this node's entry in mesh.peers are both 127.0.0.1:8080"),
        "{e}"
    );
}

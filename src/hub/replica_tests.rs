//! Failover races, each a counterexample a review found in the first build of
//! standbys (three hubs of one worker, with `mesh.replicate`, peer messages carried
//! by hand).
use super::msg::{PeerMsg, Reply};
use super::rendezvous;
use super::testnet::{A, Net, seeds};
use super::{Hub, HubConfig, Topology};

fn cfg() -> HubConfig {
    let mut c = HubConfig::for_tests();
    c.replicate = true;
    c
}

/// Three nodes with `mesh.replicate`.
fn replicated() -> Net {
    Net::new(cfg())
}

/// Owner 1 with all up; 2 without 1; standby of 1 with all up is 2.
fn room() -> String {
    (0..)
        .map(|i| format!("r{i}"))
        .find(|r| {
            rendezvous::owner(r, &seeds(), 0b111) == 1 && rendezvous::owner(r, &seeds(), 0b101) == 2
        })
        .unwrap()
}

/// A room node 2 owns with all up, node 1 owns without node 2, and whose standby
/// at node 1 (view {0,1}) is node 0.
fn room2() -> String {
    (0..)
        .map(|i| format!("q{i}"))
        .find(|r| {
            rendezvous::owner(r, &seeds(), 0b111) == 2 && rendezvous::owner(r, &seeds(), 0b011) == 1
        })
        .unwrap()
}

/// Finding: the seed after an election carries the idempotency keys of messages
/// still held (seq > the seed's seq); the promoted copy answers a repeat of such a
/// key with a seq that went to another message.
#[test]
fn seed_keys_name_seqs_the_copy_never_got() {
    let room = room();
    let mut net = replicated();
    // Node 2 is cut off from node 1: node 1 owns the room, standby node 0.
    net.link(1, 2, false, 1);
    net.subscribe(0, A, &room, None);
    net.publish(1, &room, 1, None, Some(1));
    net.deliver_all();
    assert!(matches!(net.reply(1), Some(Reply::Published(s)) if s.seq == 1));
    assert_eq!(net.hubs[0].copy_of(&room).map(|c| c.3), Some(1));
    // Node 2 is back: node 1 elects the next term for standby 2; meanwhile a
    // publish with key K is stamped (seq 2) and held.
    net.link(1, 2, true, 2);
    net.publish(1, &room, 2, Some("K"), Some(2));
    // The election ends and the seed goes to node 2; node 1 dies before the
    // Replicate of seq 2 reaches it.
    net.deliver_except(|f, t, m| f == 1 && t == 2 && matches!(m, PeerMsg::Replicate { .. }));
    assert!(net.reply(2).is_none(), "never acknowledged");
    let copy = net.hubs[2].copy_of(&room).expect("node 2 has a copy");
    assert_eq!(copy.3, 1, "the copy holds seq 1 only: {copy:?}");
    net.crash(1);
    net.deliver_all();
    net.tick(100);
    net.deliver_all();
    let owned = net.hubs[2]
        .owned_room(&room)
        .expect("node 2 continues the room");
    assert_eq!(owned.position().1, 1);
    // A new message gets seq 2; then K's publisher (never answered) tries again.
    net.publish(2, &room, 3, None, Some(3));
    net.deliver_all();
    net.publish(2, &room, 2, Some("K"), Some(4));
    net.deliver_all();
    let st = |r: Option<&Reply>| match r {
        Some(Reply::Published(s)) => Some(*s),
        _ => None,
    };
    let r3 = st(net.reply(3));
    let r4 = st(net.reply(4));
    eprintln!("new message: {r3:?}\nretry of K: {r4:?}");
    match (r3, r4) {
        (Some(a), Some(b)) => {
            assert!(
                !(a.seq == b.seq && a.epoch == b.epoch),
                "K's retry was told it is message {} (another message's seq): {b:?}",
                b.seq
            );
        }
        other => panic!("{other:?}"),
    }
}

/// Finding: a handoff releases held messages (answers their publishers) before
/// any other node has them; the old owner dying with the handoff in flight loses
/// an acknowledged publish.
#[test]
fn handoff_acknowledges_before_anyone_else_has_it() {
    let room = room2();
    let mut net = replicated();
    // Node 2 is away: node 1 owns the room, standby 0.
    net.link(0, 2, false, 1);
    net.link(1, 2, false, 1);
    net.publish(1, &room, 1, None, Some(1));
    net.deliver_all();
    assert!(matches!(net.reply(1), Some(Reply::Published(s)) if s.seq == 1));
    // Seq 2 is stamped; its Replicate to node 0 has not arrived yet.
    net.publish(1, &room, 2, None, Some(2));
    assert!(net.reply(2).is_none());
    // Node 2 comes back (link to node 1 first): node 1 hands the room over.
    net.link(1, 2, true, 2);
    let acked = matches!(net.reply(2), Some(Reply::Published(s)) if s.seq == 2);
    eprintln!("publish 2 answered at handoff: {:?}", net.reply(2));
    // Node 1 dies with everything it sent in flight.
    net.crash(1);
    net.link(0, 2, true, 2);
    net.deliver_all();
    net.tick(3_000);
    net.deliver_all();
    let has = |n: usize| {
        net.hubs[n]
            .owned_room(&room)
            .map(|r| r.position())
            .or(net.hubs[n]
                .copy_of(&room)
                .map(|c| (crate::protocol::Epoch(c.1), c.3)))
    };
    eprintln!("node 0: {:?}, node 2: {:?}", has(0), has(2));
    assert!(
        !acked
            || [0, 2]
                .iter()
                .any(|&n| has(n).is_some_and(|(e, s)| e.0 == 101 && s >= 2)),
        "acknowledged seq 2 is nowhere"
    );
}

/// Finding: a node restarted from its log continues an epoch that a promoted
/// standby continued (and then forgot) while it was away: the same (epoch, seq)
/// goes to two messages.
#[test]
fn a_log_read_back_resurrects_an_epoch_continued_elsewhere() {
    let room = room();
    let mut net = replicated();
    net.publish(1, &room, 1, None, Some(1));
    net.deliver_all();
    let Some(Reply::Published(s1)) = net.reply(1) else {
        panic!()
    };
    let epoch = s1.epoch;
    // Seq 2 is stamped at node 1 (and logged), not yet at the standby; node 1 dies.
    net.publish(1, &room, 2, None, Some(2));
    net.crash(1);
    net.deliver_all();
    net.tick(100);
    net.deliver_all();
    assert_eq!(
        net.hubs[2].owned_room(&room).map(|r| r.position()),
        Some((epoch, 1))
    );
    // Node 2 goes on: seqs 2 and 3 are its messages.
    net.publish(2, &room, 20, None, Some(3));
    net.deliver_all();
    net.publish(2, &room, 30, None, Some(4));
    net.deliver_all();
    let Some(Reply::Published(s4)) = net.reply(4) else {
        panic!("{:?}", net.reply(4))
    };
    assert_eq!((s4.epoch, s4.seq), (epoch, 3));
    // The room goes quiet; node 2 forgets it once its history ages out.
    for _ in 0..70 {
        net.tick(1_000);
        net.deliver_all();
    }
    assert!(
        net.hubs[2].owned_room(&room).is_none(),
        "node 2 forgot the idle room"
    );
    assert!(net.hubs[0].copy_of(&room).is_none());
    // Node 1 starts again from its log (within the key window, so recovery keeps
    // the room: its position, term 1; its messages aged out).
    let now = net.now;
    let mut e = 150;
    let mut hub = Hub::new(
        0,
        cfg(),
        Topology::cluster(1, seeds(), 1),
        Box::new(move || {
            e += 1;
            e
        }),
    );
    hub.restore(
        [super::Restored {
            room: room.clone(),
            epoch: epoch.0,
            seq: 2,
            term: 1,
            messages: Vec::new(),
            keys: Vec::new(),
        }],
        now,
    );
    hub.start(now);
    net.hubs[1] = hub;
    net.down[1] = false;
    for p in [0, 2] {
        net.link(1, p, true, 100);
    }
    net.deliver_all();
    net.tick(100);
    net.deliver_all();
    let pos = net.hubs[1]
        .owned_room(&room)
        .map(|r| (r.position(), r.standby.term()));
    eprintln!("node 1 after restart: {pos:?}");
    net.publish(1, &room, 99, None, Some(5));
    net.deliver_all();
    net.tick(100);
    net.deliver_all();
    let s5 = net.reply(5).and_then(|r| match r {
        Reply::Published(s) => Some(*s),
        _ => None,
    });
    eprintln!("publish at node 1 after restart: {s5:?}");
    assert!(
        !s5.is_some_and(|s| s.epoch == epoch && s.seq <= 3),
        "({:?}, {}) was already node 2's message",
        epoch,
        s5.unwrap().seq
    );
}

/// Finding (simulator seed 6105): a standby whose copy of a room is replaced by a
/// seed of another epoch (two nodes ran the room while their views disagreed)
/// said nothing, and the room's owner went on counting on a standby that had no
/// copy: had it been lost then, the room would have started a new epoch.
#[test]
fn a_standby_whose_copy_is_replaced_tells_the_owner_which_seeds_it_again() {
    let room = room();
    let mut net = replicated();
    net.publish(1, &room, 1, None, Some(1));
    net.deliver_all();
    assert!(matches!(net.reply(1), Some(Reply::Published(s)) if s.seq == 1));
    let (owner, epoch, ..) = net.hubs[2].copy_of(&room).expect("node 2 stands by");
    assert_eq!(owner, 1);
    // Node 0 ran the room in another epoch for a while, and seeds node 2 with it.
    let other = super::msg::Handoff {
        room: room.clone(),
        epoch: epoch + 7,
        seq: 0,
        messages: Vec::new(),
        keys: Vec::new(),
        announced: Vec::new(),
        from_log: false,
        term: 1,
        answers: Vec::new(),
    };
    let now = net.now;
    net.hubs[2].handle_peer(
        0,
        PeerMsg::Seed(Box::new(other)),
        super::Arrival::UNTIMED,
        now,
    );
    net.pump(2);
    assert_eq!(net.hubs[2].copy_of(&room).map(|c| c.0), Some(0));
    // Node 1 hears that its standby lost the copy, wins the next term and seeds
    // node 2 again.
    net.deliver_all();
    net.tick(100);
    net.deliver_all();
    let copy = net.hubs[2].copy_of(&room).expect("a copy again");
    assert_eq!(
        (copy.0, copy.1, copy.3),
        (1, epoch, 1),
        "node 1's epoch: {copy:?}"
    );
    assert!(copy.2 > 1, "in a later term: {copy:?}");
    net.publish(1, &room, 2, None, Some(2));
    net.deliver_all();
    assert!(matches!(net.reply(2), Some(Reply::Published(s)) if s.seq == 2));
    assert_eq!(net.hubs[2].copy_of(&room).map(|c| c.3), Some(2));
}

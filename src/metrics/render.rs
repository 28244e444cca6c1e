//! The Prometheus text exposition of the workers' snapshots: every family, its
//! help text, and how it is read from a [`WorkerStats`].

use std::fmt::Write;

use super::{
    DEPTH_BUCKETS, Disconnect, Dropped, HANDSHAKE_STATUSES, Histogram, ProcessStats, Refused,
    WorkerStats,
};
use crate::hub::ring::Miss;

/// A metric series: name, help text, and how to read it from a snapshot.
type Series = (&'static str, &'static str, fn(&WorkerStats) -> u64);

/// Render the Prometheus text exposition of all workers' snapshots.
pub fn render(workers: &[WorkerStats], process: ProcessStats) -> String {
    let mut out = String::with_capacity(4096);
    let w = &mut out;
    let sum = |f: &dyn Fn(&WorkerStats) -> u64| workers.iter().map(f).sum::<u64>();
    family(
        w,
        (
            "ringway_connections",
            "gauge",
            "Open WebSocket connections, per worker.",
        ),
        "worker",
        workers
            .iter()
            .map(|s| (s.worker.to_string(), s.connections)),
    );
    let counters: [Series; 40] = [
        ("ringway_accepted_total", "TCP connections accepted.", |s| {
            s.accepted
        }),
        (
            "ringway_upgrades_total",
            "Completed WebSocket upgrades.",
            |s| s.upgrades,
        ),
        (
            "ringway_messages_in_total",
            "Data messages received from clients.",
            |s| s.messages_in,
        ),
        (
            "ringway_messages_out_total",
            "Frames queued toward clients.",
            |s| s.messages_out,
        ),
        (
            "ringway_bytes_in_total",
            "Bytes received from clients.",
            |s| s.bytes_in,
        ),
        (
            "ringway_bytes_out_total",
            "Bytes written to client sockets.",
            |s| s.bytes_out,
        ),
        (
            "ringway_published_total",
            "Messages stamped by room owners.",
            |s| s.hub.published,
        ),
        (
            "ringway_rate_limited_total",
            "Client messages and pings refused for the rate limits (limits.messages_per_second, limits.bytes_per_second).",
            |s| s.rate_refused,
        ),
        ("ringway_pings_total", "Server pings sent.", |s| s.pings),
        (
            "ringway_publishers_paused_total",
            "Times a publisher was not read for a while because its room's fan-out was behind (limits.backpressure_frames): a client connection, or an HTTP publish that waited.",
            |s| s.publishers_paused,
        ),
        (
            "ringway_close_timeouts_total",
            "Closes the peer did not finish within limits.close_timeout_ms (the socket was shut down).",
            |s| s.close_timeouts,
        ),
        (
            "ringway_mesh_forwarded_total",
            "Room messages this node's owners sent to peer nodes (one per message per interested node).",
            |s| s.hub.mesh_forwarded,
        ),
        (
            "ringway_mesh_delivered_total",
            "Room messages from peer nodes fanned out to local subscribers.",
            |s| s.hub.mesh_delivered,
        ),
        (
            "ringway_lag_resumes_total",
            "Rooms whose subscribers here resumed from their cursors because the owner dropped messages for this node (its mesh queue was over half its bound).",
            |s| s.hub.lag_resumes,
        ),
        (
            "ringway_owner_moves_total",
            "Rooms that moved to another owner after a mesh link went up or down.",
            |s| s.hub.owner_moves,
        ),
        (
            "ringway_handoffs_total",
            "Rooms this node handed to their next owner with their epoch, seq and history (a drain, or a node that came back).",
            |s| s.hub.handoffs_out,
        ),
        (
            "ringway_handoffs_received_total",
            "Rooms this node took over from another node by handoff.",
            |s| s.hub.handoffs_in,
        ),
        (
            "ringway_handoffs_refused_total",
            "Handoffs refused because the room already lived here (the sender's copy was dropped; its subscribers re-sync).",
            |s| s.hub.handoffs_refused,
        ),
        (
            "ringway_handoff_parked_total",
            "Requests held because a handoff of their room could still be on its way.",
            |s| s.hub.parked,
        ),
        (
            "ringway_handoff_park_timeouts_total",
            "Held requests handled after mesh.dead_after_ms without the handoff they waited for (the room may start with a new epoch).",
            |s| s.hub.park_timeouts,
        ),
        (
            "ringway_handoff_waits_expired_total",
            "Waits for a peer's handoffs that ran out before the peer said it was done.",
            |s| s.hub.handoff_waits_expired,
        ),
        (
            "ringway_replica_seeds_total",
            "Rooms sent whole to a standby (a new standby, or a room taken over).",
            |s| s.hub.seeds,
        ),
        (
            "ringway_replica_elections_total",
            "Elections this node ran to continue a room's epoch under a new term (a standby changed, an owner was lost, a room was handed over).",
            |s| s.hub.elections,
        ),
        (
            "ringway_replica_elections_lost_total",
            "Elections lost or run out (no majority granted the term).",
            |s| s.hub.elections_lost,
        ),
        (
            "ringway_replica_promotions_total",
            "Rooms this node took over from a lost owner, from its copy as the standby: same epoch, no re-sync.",
            |s| s.hub.promotions,
        ),
        (
            "ringway_replica_rooms_given_up_total",
            "Owned rooms given up because no term could be won (this node was cut off from most of the cluster): their subscribers re-sync in a new epoch.",
            |s| s.hub.rooms_given_up,
        ),
        (
            "ringway_replica_refusals_total",
            "Times a standby refused this node's messages for a room (it granted a later term to another node).",
            |s| s.hub.standby_refusals,
        ),
        (
            "ringway_publish_duplicates_total",
            "Publishes recognised by their idempotency key as repeats: answered with the first one's seq, not delivered again.",
            |s| s.hub.duplicates,
        ),
        (
            "ringway_deflate_messages_total",
            "Messages compressed with permessage-deflate (a broadcast once, however many subscribers get it).",
            |s| s.deflate.compressed,
        ),
        (
            "ringway_deflate_bytes_in_total",
            "Payload bytes of the messages compressed, before compression.",
            |s| s.deflate.bytes_before,
        ),
        (
            "ringway_deflate_bytes_out_total",
            "Payload bytes of the messages compressed, after compression.",
            |s| s.deflate.bytes_after,
        ),
        (
            "ringway_inflate_messages_total",
            "Compressed client messages inflated.",
            |s| s.deflate.inflated,
        ),
        (
            "ringway_inflate_bytes_in_total",
            "Bytes of compressed client messages as received.",
            |s| s.deflate.inflated_in,
        ),
        (
            "ringway_inflate_bytes_out_total",
            "Bytes of compressed client messages once inflated.",
            |s| s.deflate.inflated_out,
        ),
        (
            "ringway_store_records_total",
            "Records written to the history log (rooms.data_dir): stamped messages, and each room's position at the start of a segment.",
            |s| s.store.records,
        ),
        (
            "ringway_store_bytes_written_total",
            "Bytes written to the history log.",
            |s| s.store.bytes,
        ),
        (
            "ringway_store_fsyncs_total",
            "Syncs of the history log (rooms.fsync).",
            |s| s.store.fsyncs,
        ),
        (
            "ringway_store_segments_deleted_total",
            "History segments deleted once every message in them left the replay window.",
            |s| s.store.deleted,
        ),
        (
            "ringway_store_errors_total",
            "History log writes, syncs or deletes that failed (see the log; messages are still delivered).",
            |s| s.store.errors,
        ),
        (
            "ringway_idempotency_keys_forgotten_total",
            "Idempotency keys forgotten before rooms.idempotency_window_s ended, to stay under rooms.idempotency_keys.",
            |s| s.idempotency_forgotten,
        ),
    ];
    let name = "ringway_deflate_seconds_total";
    header(
        w,
        name,
        "counter",
        "Time spent compressing messages with permessage-deflate.",
    );
    let _ = writeln!(w, "{name} {}", sum(&|s| s.deflate.nanos) as f64 / 1e9);
    let name = "ringway_store_fsync_seconds_total";
    header(w, name, "counter", "Time spent syncing the history log.");
    let _ = writeln!(w, "{name} {}", sum(&|s| s.store.fsync_nanos) as f64 / 1e9);
    for (name, help, f) in counters {
        header(w, name, "counter", help);
        let _ = writeln!(w, "{name} {}", sum(&f));
    }
    header(
        w,
        "ringway_resumes_total",
        "counter",
        "Resume requests (sub with since) answered by this node's room owners, by outcome and reason. A jump is a reconnect storm.",
    );
    let _ = writeln!(
        w,
        "ringway_resumes_total{{outcome=\"recovered\",reason=\"in_window\"}} {}",
        sum(&|s| s.hub.resumes_recovered)
    );
    for m in Miss::ALL {
        let _ = writeln!(
            w,
            "ringway_resumes_total{{outcome=\"not_recovered\",reason=\"{}\"}} {}",
            m.label(),
            sum(&|s| s.hub.resumes_missed[m as usize])
        );
    }
    family(
        w,
        (
            "ringway_history_evicted_total",
            "counter",
            "Room history messages evicted before anyone asked for them, by reason (count, age, room_bytes, node_budget).",
        ),
        "reason",
        crate::hub::ring::Evicted::ALL.iter().map(|&e| {
            (
                e.label().to_owned(),
                sum(&|s| s.hub.history_evicted[e as usize]),
            )
        }),
    );
    let mut latency = Histogram::default();
    for s in workers {
        latency.merge(&s.publish_to_write);
    }
    latency.render(
        w,
        "ringway_publish_to_write_seconds",
        "Time from a message reaching this node (from a client, the API or a peer) to its frame being handed to the kernel for a subscriber.",
    );
    family(
        w,
        (
            "ringway_dropped_total",
            "counter",
            "Frames dropped toward slow consumers, by reason.",
        ),
        "reason",
        Dropped::ALL
            .iter()
            .map(|&(d, label)| (label.to_owned(), sum(&|s| s.drops[d as usize]))),
    );
    family(
        w,
        (
            "ringway_refused_total",
            "counter",
            "Upgrades refused for capacity, by reason.",
        ),
        "reason",
        Refused::ALL
            .iter()
            .map(|&(r, label)| (label.to_owned(), sum(&|s| s.refused[r as usize]))),
    );
    family(
        w,
        (
            "ringway_send_queue_depth",
            "gauge",
            "Connections by send-queue depth in frames, bucketed by upper bound (depth_le: the bucket's bound; a gauge, not a histogram).",
        ),
        "depth_le",
        DEPTH_BUCKETS.iter().enumerate().map(|(i, &bound)| {
            let le = if bound == usize::MAX {
                "+Inf".to_owned()
            } else {
                bound.to_string()
            };
            (le, sum(&|s| s.queue_depth[i]))
        }),
    );
    family(
        w,
        (
            "ringway_handshake_failures_total",
            "counter",
            "Refused WebSocket upgrades, by HTTP status.",
        ),
        "status",
        HANDSHAKE_STATUSES
            .iter()
            .enumerate()
            .map(|(i, status)| (status.to_string(), sum(&|s| s.handshake_failures[i]))),
    );
    family(
        w,
        (
            "ringway_disconnects_total",
            "counter",
            "Ended connections, by reason.",
        ),
        "reason",
        Disconnect::ALL
            .iter()
            .map(|&d| (d.label().to_owned(), sum(&|s| s.disconnects[d as usize]))),
    );
    let gauges: [Series; 17] = [
        (
            "ringway_idempotency_keys",
            "Idempotency keys the node's room owners remember (bounded by rooms.idempotency_keys).",
            |s| s.idempotency_keys,
        ),
        (
            "ringway_mesh_interest",
            "Interest entries: peer nodes registered on owned rooms plus rooms mirrored from peers.",
            |s| s.interest,
        ),
        (
            "ringway_rooms_owned",
            "Rooms owned (sequenced) by this node.",
            |s| s.rooms_owned,
        ),
        (
            "ringway_rooms_replicated",
            "Owned rooms whose standby keeps a copy: losing this node loses none of their acknowledged messages.",
            |s| s.rooms_replicated,
        ),
        (
            "ringway_inbox_letters",
            "Letters waiting in the workers' inboxes (mail between workers, peer messages): a backlog here is work the node is behind on.",
            |s| s.inbox,
        ),
        (
            "ringway_rooms_behind",
            "Rooms whose fan-out is behind (over half their subscribers on the node have a full socket and more than limits.backpressure_frames frames queued), counted on each worker where some of them are: their publishers are paused.",
            |s| s.rooms_behind,
        ),
        (
            "ringway_rooms_unreplicated",
            "Owned rooms with no standby while mesh.replicate is on (no live peer, or a standby being chosen): losing this node now would cost them their epoch.",
            |s| s.rooms_unreplicated,
        ),
        (
            "ringway_replica_held_messages",
            "Stamped messages waiting for their standby's acknowledgement before delivery.",
            |s| s.replica_held,
        ),
        (
            "ringway_replica_copies",
            "Rooms this node keeps a copy of as their standby.",
            |s| s.replica_copies,
        ),
        (
            "ringway_replica_bytes",
            "Bytes of history in the copies this node keeps as a standby (each bounded as an owner's history is).",
            |s| s.replica_bytes,
        ),
        (
            "ringway_handoff_parked",
            "Requests held now because a handoff of their room could still be on its way (each for at most mesh.dead_after_ms).",
            |s| s.handoff_parked,
        ),
        (
            "ringway_timer_entries",
            "Entries on the workers' timer wheels: one per open connection, plus stale ones not yet come due.",
            |s| s.timer_entries,
        ),
        (
            "ringway_store_disk_bytes",
            "Bytes of history on disk (rooms.data_dir): about what the rooms published within rooms.replay_seconds, plus one open segment per worker.",
            |s| s.store.disk_bytes,
        ),
        (
            "ringway_store_segments",
            "History segment files on disk.",
            |s| s.store.segments,
        ),
        (
            "ringway_history_bytes",
            "Bytes of room history held for resume (bounded by rooms.history_budget_bytes).",
            |s| s.history_bytes,
        ),
        (
            "ringway_rooms_subscribed",
            "Rooms with local subscribers, summed over workers.",
            |s| s.rooms_local,
        ),
        (
            "ringway_send_queue_bytes",
            "Bytes queued toward clients, summed over connections (a broadcast frame queued for N subscribers counts N times; memory holds it once).",
            |s| s.queued_bytes,
        ),
    ];
    for (name, help, f) in gauges {
        header(w, name, "gauge", help);
        let _ = writeln!(w, "{name} {}", sum(&f));
    }
    header(
        w,
        "ringway_process_resident_memory_bytes",
        "gauge",
        "Resident set size.",
    );
    let _ = writeln!(
        w,
        "ringway_process_resident_memory_bytes {}",
        process.rss_bytes
    );
    header(
        w,
        "ringway_max_connections",
        "gauge",
        "The node's connection cap (limits.max_connections, or what the open-file limit allows).",
    );
    let _ = writeln!(w, "ringway_max_connections {}", process.max_connections);
    header(
        w,
        "ringway_host_memory_bytes",
        "gauge",
        "The host's memory (MemTotal), to compare with the resident set size.",
    );
    let _ = writeln!(w, "ringway_host_memory_bytes {}", process.host_memory_bytes);
    header(
        w,
        "ringway_process_open_fds",
        "gauge",
        "Open file descriptors.",
    );
    let _ = writeln!(w, "ringway_process_open_fds {}", process.open_fds);
    out
}

/// One metric family with a single label: the header, then a series per value.
/// (Writing to a String cannot fail.)
fn family(
    w: &mut String,
    (name, kind, help): (&str, &str, &str),
    label: &str,
    rows: impl Iterator<Item = (String, u64)>,
) {
    header(w, name, kind, help);
    for (value, n) in rows {
        let _ = writeln!(w, "{name}{{{label}=\"{value}\"}} {n}");
    }
}

fn header(w: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(w, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_sums_and_per_worker_series() {
        let mut a = WorkerStats {
            worker: 0,
            connections: 3,
            messages_in: 5,
            ..Default::default()
        };
        a.handshake_failed(426);
        a.disconnected(Disconnect::TooBig);
        let b = WorkerStats {
            worker: 1,
            connections: 4,
            messages_in: 7,
            ..Default::default()
        };
        let text = render(&[a, b], ProcessStats::default());
        assert!(text.contains("ringway_connections{worker=\"0\"} 3\n"));
        assert!(text.contains("ringway_connections{worker=\"1\"} 4\n"));
        assert!(text.contains("ringway_messages_in_total 12\n"));
        assert!(text.contains("ringway_handshake_failures_total{status=\"426\"} 1\n"));
        assert!(text.contains("ringway_disconnects_total{reason=\"too_big\"} 1\n"));
    }
}

//! 10 000 trigger edges in a second while the daemon is busy: every one is
//! accounted for (handled or coalesced), memory stays flat, and the daemon
//! still answers the next trigger. Its own test binary, so the RSS figures
//! are this test's alone.

mod common;

use std::time::{Duration, Instant};

use clip_edge_board::events::{Event, EventSink};
use clip_edge_board::trigger::SimTrigger;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).expect("value").parse().expect("number")
}

#[test]
fn a_storm_of_triggers_is_coalesced_with_flat_memory() {
    let frames = common::frames();
    let config = common::config(frames.path(), "[events]\nstdout = false\n");
    let (trigger, handle) = SimTrigger::new("storm".into());
    let (mut d, _pin) = common::start(config, trigger, None, EventSink::memory()).expect("start");
    // Warm up so allocations of the first frames are not counted as growth.
    handle.fire();
    d.run(Some(1));
    let before = rss_kib();

    const EDGES: u64 = 10_000;
    let storm = handle.clone();
    drop(handle);
    let thread = std::thread::spawn(move || {
        let t0 = Instant::now();
        for i in 0..EDGES {
            storm.fire();
            if i % 100 == 0 {
                std::thread::sleep(Duration::from_micros(9_000));
            }
        }
        let storm_time = t0.elapsed();
        // A quiet moment, then one more trigger: it must be answered promptly and
        // carries whatever the storm left uncounted. Dropping the last handle ends the source.
        std::thread::sleep(Duration::from_millis(300));
        storm.fire();
        storm_time
    });
    let stats = d.run(None);
    let storm_time = thread.join().expect("storm");
    let after = rss_kib();
    let handled = stats.events - 1;
    let last_total_ms = d
        .events()
        .iter()
        .rev()
        .find_map(|e| if let Event::Event { timing_ms, .. } = e { Some(timing_ms.total) } else { None })
        .expect("an event");
    println!(
        "{EDGES} edges in {:.2} s: {handled} events, {} coalesced; RSS {before} -> {after} KiB; \
         the trigger after the storm was answered in {last_total_ms:.1} ms",
        storm_time.as_secs_f64(),
        stats.coalesced,
    );
    assert_eq!(handled + stats.coalesced, EDGES + 1, "every edge is either handled or counted as coalesced");
    assert!(storm_time < Duration::from_secs(2), "the storm took {storm_time:?}");
    assert!(after.saturating_sub(before) < 16 * 1024, "RSS grew by {} KiB", after - before);
    assert!(handled < EDGES / 10, "{handled} events: triggers were queued, not coalesced");
    // Answered within a few frame times of the model itself (a frame takes ~5 ms
    // natively, ~1 s under qemu), i.e. not behind a backlog of queued triggers.
    let slowest_infer_ms = d
        .events()
        .iter()
        .filter_map(|e| if let Event::Event { timing_ms, .. } = e { Some(timing_ms.infer) } else { None })
        .fold(0.0f64, f64::max);
    assert!(
        last_total_ms < 4.0 * slowest_infer_ms + 200.0,
        "the daemon took {last_total_ms} ms to answer after the storm (slowest inference {slowest_infer_ms} ms)"
    );
}

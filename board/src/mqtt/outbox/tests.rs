use super::*;

fn payload(seq: u64) -> Vec<u8> {
    format!("{{\"type\":\"event\",\"seq\":{seq},\"pad\":\"{}\"}}", "x".repeat((seq % 7) as usize * 10))
        .into_bytes()
}

fn filled(dir: &Path, n: u64) -> PathBuf {
    let path = dir.join("o.outbox");
    let mut o = Outbox::open(&path, 1 << 20).expect("open");
    for seq in 1..=n {
        o.append(seq, &payload(seq)).expect("append");
    }
    path
}

#[test]
fn records_survive_a_reopen_and_seq_continues() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = filled(dir.path(), 5);
    let mut o = Outbox::open(&path, 1 << 20).expect("reopen");
    assert_eq!((o.last_seq(), o.owed()), (5, 5));
    assert_eq!(o.next_after(0).expect("first").payload, payload(1));
    o.ack(1);
    o.ack(3); // overtakes 2: waits for it
    assert_eq!(o.acked(), 1);
    assert_eq!(o.next_after(1).expect("2").seq, 2);
    assert_eq!(o.next_after(2).expect("4, 3 is acked").seq, 4);
    o.ack(2);
    assert_eq!((o.acked(), o.owed()), (3, 2));
    o.persist().expect("persist");
    drop(o);
    let mut o = Outbox::open(&path, 1 << 20).expect("reopen");
    assert_eq!((o.acked(), o.owed(), o.last_seq()), (3, 2, 5));
    assert!(o.append(5, b"{}").is_err(), "seq must grow");
    o.append(6, b"{}").expect("append");
}

#[test]
fn every_cut_of_the_file_opens_to_a_prefix_of_its_records() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = filled(dir.path(), 4);
    let full = std::fs::read(&path).expect("read");
    let whole: Vec<usize> = {
        let (mut at, mut ends) = (8usize, vec![8usize]);
        for seq in 1..=4 {
            at += HEAD + payload(seq).len();
            ends.push(at);
        }
        ends
    };
    for cut in 8..full.len() {
        std::fs::write(&path, &full[..cut]).expect("cut");
        let mut o = Outbox::open(&path, 1 << 20).expect("a cut file opens");
        let n = whole.iter().filter(|&&e| e <= cut).count() as u64 - 1;
        assert_eq!(o.last_seq(), n, "cut at {cut}");
        assert_eq!(
            std::fs::metadata(&path).expect("meta").len() as usize,
            whole[n as usize],
            "truncated back"
        );
        o.append(n + 1, b"{\"after\":1}").expect("appends after a cut");
        drop(o);
        assert_eq!(Outbox::open(&path, 1 << 20).expect("reopen").last_seq(), n + 1);
    }
}

#[test]
fn a_flipped_byte_ends_the_valid_part() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = filled(dir.path(), 3);
    let mut bytes = std::fs::read(&path).expect("read");
    let second = 8 + HEAD + payload(1).len();
    bytes[second + HEAD + 2] ^= 0x40;
    std::fs::write(&path, &bytes).expect("write");
    let o = Outbox::open(&path, 1 << 20).expect("open");
    assert_eq!((o.owed(), o.last_seq()), (1, 1));
}

#[test]
fn the_cap_drops_the_oldest_and_counts_them() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("o.outbox");
    let cap = 64 << 10;
    let mut o = Outbox::open(&path, cap).expect("open");
    let body = vec![b'x'; 1000];
    for seq in 1..=200 {
        o.append(seq, &body).expect("append");
        assert!(o.file_len() <= cap, "{} > {cap}", o.file_len());
    }
    assert!(o.dropped() > 100, "{}", o.dropped());
    assert_eq!(o.dropped() + o.owed() as u64, 200);
    assert_eq!(o.next_after(0).expect("oldest kept").seq, o.dropped() + 1);
    drop(o);
    let o = Outbox::open(&path, cap).expect("reopen");
    assert_eq!(o.dropped() + o.owed() as u64, 200);
    assert_eq!(o.last_seq(), 200);
}

#[test]
fn acknowledged_records_are_compacted_away() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("o.outbox");
    let cap = 64 << 10;
    let mut o = Outbox::open(&path, cap).expect("open");
    for seq in 1..=1000 {
        o.append(seq, &[b'y'; 200]).expect("append");
        o.ack(seq);
        o.persist().expect("persist");
    }
    assert_eq!((o.owed(), o.dropped()), (0, 0));
    assert!(o.file_len() <= cap / 2 + 300, "{}", o.file_len());
    drop(o);
    assert_eq!(Outbox::open(&path, cap).expect("reopen").last_seq(), 1000);
}

#[test]
fn foreign_files_are_refused_and_left_alone() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("o.outbox");
    std::fs::write(&path, b"not an outbox at all").expect("write");
    let e = Outbox::open(&path, 1 << 20).expect_err("foreign");
    assert!(e.to_string().contains("o.outbox: not a clip-edge outbox"), "{e}");
    assert_eq!(std::fs::read(&path).expect("read"), b"not an outbox at all");
    std::fs::remove_file(&path).expect("remove");
    let path = filled(dir.path(), 1);
    let mut o = Outbox::open(&path, 1 << 20).expect("open");
    o.ack(1);
    o.persist().expect("persist");
    let state = state_path(&path);
    let mut b = std::fs::read(&state).expect("state");
    b[9] ^= 1;
    std::fs::write(&state, b).expect("write");
    drop(o);
    let o = Outbox::open(&path, 1 << 20).expect("a corrupt state is moved aside");
    assert_eq!((o.last_seq(), o.owed()), (1, 1), "the records are owed again");
    assert!(dir.path().join("o.outbox.state.corrupt").exists());
}

#[test]
fn arbitrary_bytes_never_panic_the_parser() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for n in 0..2000usize {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut bytes: Vec<u8> = (0..n % 97).map(|i| (seed >> (i % 56)) as u8).collect();
        if n % 3 == 0 {
            let mut good = Vec::new();
            encode(n as u64 + 1, &bytes, &mut good);
            good.extend_from_slice(&bytes);
            bytes = good;
        }
        let (records, valid) = parse_records(&bytes);
        assert!(valid <= bytes.len());
        assert!(records.len() <= 1 + bytes.len() / HEAD);
    }
}

/// The `mqtt_outbox` fuzz target's seeds (`tools/fuzz/corpus/mqtt_outbox`,
/// the file's records after its magic): checked here, rewritten with
/// `CLIP_EDGE_WRITE_SEEDS=1` (`tools/fuzz/seed.sh`).
#[test]
fn fuzz_seeds_are_what_the_outbox_writes() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/fuzz/corpus/mqtt_outbox");
    let write = std::env::var("CLIP_EDGE_WRITE_SEEDS").as_deref() == Ok("1");
    for (name, n, cut) in [("three-records", 3u64, 0usize), ("torn-tail", 3, 7)] {
        let dir = tempfile::tempdir().expect("tmp");
        let bytes = std::fs::read(filled(dir.path(), n)).expect("read");
        let seed = &bytes[8..bytes.len() - cut];
        let path = corpus.join(name);
        if write {
            std::fs::create_dir_all(&corpus).expect("corpus");
            std::fs::write(&path, seed).expect("write");
        }
        let committed = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run tools/fuzz/seed.sh", path.display()));
        assert!(committed == seed, "{} differs; run tools/fuzz/seed.sh", path.display());
    }
}

#[test]
fn one_process_at_a_time() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("o.outbox");
    let first = Outbox::open(&path, 1 << 20).expect("open");
    let e = Outbox::open(&path, 1 << 20).expect_err("second writer");
    assert!(e.to_string().contains("in use by another process"), "{e}");
    drop(first);
    Outbox::open(&path, 1 << 20).expect("free again");
}

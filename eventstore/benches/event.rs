//! Parse + verify throughput against bare secp256k1 verification, writing events' JSON
//! (what a store does for every event it serves), and filter matching.
//!
//! `LAYER2_REAL_EVENTS` points at a JSON-lines corpus (CI: `../shared/data/real-events.jsonl`);
//! without it, generated events of typical size are used.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use eventstore::{Event, EventBuilder, Filter, Keys, Kind, Timestamp};

fn corpus() -> Vec<String> {
    if let Ok(path) = std::env::var("LAYER2_REAL_EVENTS") {
        if let Ok(text) = std::fs::read_to_string(&path) {
            return text.lines().take(2_000).map(str::to_owned).collect();
        }
        eprintln!("cannot read {path}; using generated events");
    }
    (0..2_000u64)
        .map(|i| {
            EventBuilder::text_note("a typical note with some text in it. ".repeat(12))
                .tag(["e", &format!("{i:064x}")])
                .tag(["p", &format!("{:064x}", i * 7)])
                .tag(["t", "nostr"])
                .created_at(Timestamp(1_700_000_000 + i))
                .sign(&Keys::from_seed(i % 50))
                .as_json()
                .to_owned()
        })
        .collect()
}

fn verify(c: &mut Criterion) {
    let lines = corpus();
    let events: Vec<Event> = lines.iter().map(|l| Event::from_json(l).unwrap()).collect();
    let mut g = c.benchmark_group("verify");
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.sample_size(10);

    // The floor: what secp256k1 alone costs, from bytes (key lift + schnorr verify).
    g.bench_function("bare_secp256k1_schnorr", |b| {
        b.iter(|| {
            for e in &events {
                let pk = secp256k1::XOnlyPublicKey::from_byte_array(e.pubkey().0).unwrap();
                let sig = secp256k1::schnorr::Signature::from_byte_array(e.sig().0);
                black_box(secp256k1::schnorr::verify(&sig, &e.id().0, &pk).is_ok());
            }
        })
    });
    g.bench_function("parse_id_and_signature", |b| {
        b.iter(|| {
            for l in &lines {
                let e = Event::from_json(black_box(l)).unwrap();
                black_box(e.verify().is_ok());
            }
        })
    });
    g.bench_function("parse_only", |b| {
        b.iter(|| {
            for l in &lines {
                black_box(Event::from_json(black_box(l)).unwrap());
            }
        })
    });
    g.finish();
}

fn matching(c: &mut Criterion) {
    let lines = corpus();
    let events: Vec<Event> = lines.iter().map(|l| Event::from_json(l).unwrap()).collect();
    let authors: Vec<_> = events.iter().take(50).map(Event::pubkey).collect();
    let mut feed = Filter::new().kind(Kind(1)).kind(Kind(6)).limit(20);
    for a in authors {
        feed = feed.author(a);
    }
    let tag = Filter::new().tag('t', "nostr").tag('p', "x".repeat(64));
    let mut g = c.benchmark_group("filter_match");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("feed_50_authors", |b| {
        b.iter(|| events.iter().filter(|e| feed.matches(e)).count())
    });
    g.bench_function("tags", |b| {
        b.iter(|| events.iter().filter(|e| tag.matches(e)).count())
    });
    g.finish();
}

/// Writing each event's JSON from its fields, as a store rebuilds every event it serves
/// from its own record.
fn writing(c: &mut Criterion) {
    let events: Vec<Event> = corpus()
        .iter()
        .map(|l| Event::from_json(l).unwrap())
        .collect();
    let mut g = c.benchmark_group("write_json");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("serialize_event", |b| {
        b.iter(|| {
            for e in &events {
                let p = eventstore::canonical::Parts {
                    pubkey: &e.pubkey().0,
                    created_at: e.created_at().0,
                    kind: e.kind().0,
                    tags: e.tags(),
                    content: e.content(),
                };
                black_box(eventstore::canonical::serialize_event(
                    &p,
                    &e.id().0,
                    &e.sig().0,
                ));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, verify, writing, matching);
criterion_main!(benches);

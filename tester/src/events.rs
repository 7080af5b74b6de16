//! Realistic signed events: many keys, a Zipf mix of authors, a mix of kinds with their
//! usual tags, and content sizes from a few words to long-form articles. Every event
//! carries a `["t", <run tag>]` tag so one run's events can be told apart.

use eventstore::{Event, EventBuilder, Keys, Kind, Timestamp};

/// A small fast PRNG (splitmix64); reproducible from its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// Zipf(s = 1) over `n` ranks: rank 0 is the most frequent.
#[derive(Debug, Clone)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize) -> Zipf {
        let weights: Vec<f64> = (1..=n.max(1)).map(|k| 1.0 / k as f64).collect();
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let cdf = weights
            .iter()
            .map(|w| {
                acc += w / total;
                acc
            })
            .collect();
        Zipf { cdf }
    }

    pub fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.cdf.partition_point(|c| *c < u).min(self.cdf.len() - 1)
    }
}

const WORDS: &[&str] = &[
    "nostr", "relay", "note", "zap", "hello", "world", "bitcoin", "freedom", "protocol", "client",
    "key", "event", "today", "good", "morning", "gm", "build", "ship", "the", "a", "of", "and",
    "to", "in", "is", "it", "that", "for", "on", "with",
];

fn words(rng: &mut Rng, bytes: usize) -> String {
    let mut s = String::with_capacity(bytes + 8);
    while s.len() < bytes {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(WORDS[rng.below(WORDS.len())]);
    }
    s
}

/// The event mix of a run.
#[derive(Debug)]
pub struct Generator {
    pub keys: Vec<Keys>,
    zipf: Zipf,
    pub tag: String,
    rng: Rng,
    /// Fixed content size (the cache mode's uniform events).
    pub content_bytes: Option<usize>,
    /// When set, events are dated from this time on, one second apart, instead of now
    /// (a history spread over time, as a relay's store is).
    pub backdate: Option<u64>,
}

impl Generator {
    /// Authors derive from `seed` (the same set for every publisher of a run); the event
    /// stream from `seed` and `stream`.
    pub fn new(authors: usize, seed: u64, stream: u64, tag: String) -> Generator {
        let keys = (0..authors.max(1))
            .map(|i| Keys::from_seed(seed.wrapping_mul(1_000_003).wrapping_add(i as u64)))
            .collect();
        Generator {
            keys,
            zipf: Zipf::new(authors),
            tag,
            rng: Rng::new(seed ^ stream.wrapping_mul(0xA24B_AED4_963E_E407)),
            content_bytes: None,
            backdate: None,
        }
    }

    /// A Zipf-chosen author's index.
    pub fn author(&mut self) -> usize {
        self.zipf.sample(&mut self.rng)
    }

    /// Hex public keys of the `n` most active authors.
    pub fn top_authors(&self, n: usize) -> Vec<String> {
        self.keys
            .iter()
            .take(n)
            .map(|k| k.public_key().to_string())
            .collect()
    }

    /// One event: 78% notes, 12% reactions, 4% reposts, 3% long-form (addressable),
    /// 2% profiles and 1% follow lists (replaceable).
    pub fn next(&mut self) -> Event {
        let a = self.author();
        let keys = &self.keys[a];
        let other = self.keys[self.rng.below(self.keys.len())]
            .public_key()
            .to_string();
        let fake_id = format!(
            "{:016x}{:016x}{:016x}{:016x}",
            self.rng.next_u64(),
            self.rng.next_u64(),
            self.rng.next_u64(),
            self.rng.next_u64()
        );
        let roll = self.rng.below(100);
        let run = vec!["t".to_string(), self.tag.clone()];
        let (kind, content, mut tags): (u16, String, Vec<Vec<String>>) =
            if let Some(n) = self.content_bytes {
                (1, words(&mut self.rng, n), vec![])
            } else if roll < 78 {
                let len = match self.rng.below(10) {
                    0..=5 => 20 + self.rng.below(120),
                    6..=8 => 140 + self.rng.below(600),
                    _ => 800 + self.rng.below(2_000),
                };
                let mut tags = vec![];
                if self.rng.below(3) == 0 {
                    tags.push(vec![
                        "e".into(),
                        fake_id.clone(),
                        String::new(),
                        "reply".into(),
                    ]);
                    tags.push(vec!["p".into(), other.clone()]);
                }
                (1, words(&mut self.rng, len), tags)
            } else if roll < 90 {
                (
                    7,
                    "+".into(),
                    vec![vec!["e".into(), fake_id], vec!["p".into(), other]],
                )
            } else if roll < 94 {
                (
                    6,
                    String::new(),
                    vec![vec!["e".into(), fake_id], vec!["p".into(), other]],
                )
            } else if roll < 97 {
                let d = format!("article-{}", self.rng.below(20));
                let len = 2_000 + self.rng.below(6_000);
                (
                    30023,
                    words(&mut self.rng, len),
                    vec![
                        vec!["d".into(), d],
                        vec!["title".into(), "On relays".into()],
                    ],
                )
            } else if roll < 99 {
                (
                    0,
                    format!(
                        "{{\"name\":\"user{a}\",\"about\":\"{}\"}}",
                        words(&mut self.rng, 60)
                    ),
                    vec![],
                )
            } else {
                let follows = (0..20)
                    .map(|_| {
                        vec![
                            "p".to_string(),
                            self.keys[self.rng.below(self.keys.len())]
                                .public_key()
                                .to_string(),
                        ]
                    })
                    .collect();
                (3, String::new(), follows)
            };
        tags.push(run);
        let created_at = match &mut self.backdate {
            Some(t) => {
                *t += 1;
                Timestamp(*t - 1)
            }
            None => Timestamp::now(),
        };
        EventBuilder::new(Kind(kind), content)
            .tags(tags)
            .created_at(created_at)
            .sign(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_prefers_low_ranks() {
        let z = Zipf::new(100);
        let mut rng = Rng::new(1);
        let mut counts = [0usize; 100];
        for _ in 0..20_000 {
            counts[z.sample(&mut rng)] += 1;
        }
        assert!(counts[0] > counts[9] * 5, "{} vs {}", counts[0], counts[9]);
        assert!(counts.iter().all(|c| *c < 20_000));
    }

    #[test]
    fn events_verify_and_carry_the_run_tag() {
        let mut g = Generator::new(10, 3, 0, "run-x".into());
        for _ in 0..200 {
            let e = g.next();
            e.verify().unwrap();
            assert!(e.tag_values("t").any(|v| v == "run-x"));
        }
    }
}

//! Seeded generator of realistic synthetic e-commerce traffic.
//!
//! The output is a recording in the wire form of `spec/wire.md`: one JSON
//! object per Kafka record, `{"topic","partition","offset","timestamp","key",
//! "value"}`, in event-time order, for the topics `tracking`, `prices`,
//! `stock` and `catalog`.
//!
//! The model, briefly:
//!
//! * Sessions start as a Poisson process; each picks a user that is not in a
//!   session already (and, when possible, whose last session ended a while
//!   ago). A session is a burst of tracking events a few seconds to a few
//!   minutes apart (geometric length, mean 8 steps).
//! * Products have a Zipf-like popularity, a fixed category `c{n}`, seller
//!   `s{n}` and group `g{n}` (products `p{3k}`, `p{3k+1}`, `p{3k+2}` are the
//!   same item sold by different sellers). The first time a product is
//!   referenced, its `catalog`, initial `prices` and initial `stock` messages
//!   are written just before the referencing record (same `ts`).
//! * A separate Poisson process changes prices (drops of 3-30 %, rises) and
//!   stock (sometimes to 0, then back above 0 later).
//! * Orders are placed from the generator's view of the cart and are later
//!   delivered (sometimes reviewed) or cancelled. Delays scale with the
//!   workload's time span (about a sixth of it, between 1 minute and 2 days),
//!   so short, time-compressed workloads still contain every event type.
//! * A share of users start anonymous (`anonymous_id` `a{n}` only) and later
//!   send `identify` linking `a{n}` to `u{n}` (always before ordering).
//!
//! Memory is O(users + products); the per-record cost is a handful of
//! random draws and hand-written JSON.

use std::collections::{BinaryHeap, VecDeque};
use std::io::Write;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Parameters of a generated workload.
#[derive(Clone, Debug, clap::Args)]
pub struct GenerateArgs {
    /// Number of tracking/price/stock records to generate in total.
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,
    /// Number of distinct users.
    #[arg(long, default_value_t = 10_000)]
    pub users: u64,
    /// Number of distinct products.
    #[arg(long, default_value_t = 1_000)]
    pub products: u64,
    /// RNG seed; the same seed gives the same output.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Event time of the first record, ms since the epoch, or `now` (the
    /// wall clock at start).
    #[arg(long, default_value = "1700000000000", value_parser = parse_start_ms)]
    pub start_ms: u64,
    /// Average event rate, in events per simulated second (decides the time span).
    #[arg(long, default_value_t = 1.0)]
    pub rate_per_s: f64,
    /// Share of tracking events sent only with an anonymous_id (later identified), 0..1.
    #[arg(long, default_value_t = 0.05)]
    pub anonymous_share: f64,
}

/// `--start-ms`: ms since the epoch, or `now`.
fn parse_start_ms(s: &str) -> Result<u64, String> {
    if s == "now" {
        return Ok(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64));
    }
    s.parse()
        .map_err(|_| format!("{s:?} is neither ms since the epoch nor `now`"))
}

impl Default for GenerateArgs {
    fn default() -> Self {
        GenerateArgs {
            events: 100_000,
            users: 10_000,
            products: 1_000,
            seed: 42,
            start_ms: 1_700_000_000_000,
            rate_per_s: 1.0,
            anonymous_share: 0.05,
        }
    }
}

/// An iterator over generated records, each already in the recording's wire form
/// (a serde_json::Value object {"topic","partition","offset","timestamp","key","value"}), in event-time order.
pub fn records(args: &GenerateArgs) -> impl Iterator<Item = serde_json::Value> {
    lines(args).map(|line| {
        serde_json::from_str::<serde_json::Value>(&line)
            .unwrap_or_else(|e| panic!("generator wrote invalid JSON ({e}): {line}"))
    })
}

/// Faster: the same records as JSON lines (no trailing newline), for benchmarks.
pub fn lines(args: &GenerateArgs) -> impl Iterator<Item = String> {
    let mut g = Generator::new(args);
    g.warm_up();
    g
}

/// Writes `records(args)` as JSON lines to `out`; returns the count.
pub fn write_jsonl(args: &GenerateArgs, out: &mut dyn Write) -> std::io::Result<u64> {
    let mut w = std::io::BufWriter::with_capacity(1 << 16, out);
    let mut n = 0u64;
    for line in lines(args) {
        w.write_all(line.as_bytes())?;
        w.write_all(b"\n")?;
        n += 1;
    }
    w.flush()?;
    Ok(n)
}

// ---------------------------------------------------------------------------
// Model constants.

const PARTITIONS: u64 = 4;
/// Products `p{GROUP*k} .. p{GROUP*k+GROUP-1}` share group `g{k}` (and category).
const GROUP: u32 = 3;
const NONE: u32 = u32::MAX;
/// Mean number of steps of a session (geometric).
const SESSION_MEAN_STEPS: f64 = 8.0;
/// Records per session, all told (session steps, extra identify/consent
/// records, later delivery/review records, first-appearance product records);
/// calibrated so that the time span is about `events / rate_per_s`.
const RECORDS_PER_SESSION: f64 = 8.4;
/// Share of the record rate that is price/stock changes.
const PRODUCT_UPDATE_SHARE: f64 = 0.02;
/// Maximum number of cart + wishlist entries the generator remembers per user.
const MAX_ITEMS: usize = 12;
const ZIPF_PRODUCTS: f64 = 0.85;

// User flags.
const U_SEEN: u8 = 1;
const U_BUSY: u8 = 2;
const U_ANON: u8 = 4;
const U_ORDER_PENDING: u8 = 8;
const U_FORGOTTEN: u8 = 16;
const U_OPTED_OUT: u8 = 32;

// Product flags.
const P_SEEN: u8 = 1;
const P_RESTOCK_PENDING: u8 = 2;

const LANGUAGES: [&str; 3] = ["az", "en", "ru"];
const PLATFORMS: [&str; 3] = ["android", "ios", "web"];
const CHANNELS: [&str; 3] = ["push", "email", "sms"];
const PAYMENTS: [&str; 3] = ["secure", "cash_on_delivery", "other"];
const CANCEL_REASONS: [&str; 3] = ["out_of_stock", "customer", "other"];

const QUERIES: [&str; 40] = [
    "phone",
    "iphone",
    "samsung",
    "headphones",
    "laptop",
    "sneakers",
    "dress",
    "watch",
    "tv",
    "kettle",
    "coffee machine",
    "backpack",
    "jeans",
    "perfume",
    "lego",
    "vacuum cleaner",
    "air fryer",
    "phone case",
    "charger",
    "tablet",
    "winter jacket",
    "baby stroller",
    "gaming chair",
    "monitor",
    "keyboard",
    "mouse",
    "blender",
    "sunglasses",
    "hoodie",
    "bedsheets",
    "tea set",
    "football",
    "yoga mat",
    "carpet",
    "desk lamp",
    "smart band",
    "earrings",
    "handbag",
    "power bank",
    "toys",
];

const ADJECTIVES: [&str; 16] = [
    "Classic",
    "Compact",
    "Deluxe",
    "Eco",
    "Essential",
    "Premium",
    "Smart",
    "Ultra",
    "Pro",
    "Mini",
    "Max",
    "Urban",
    "Vintage",
    "Sport",
    "Home",
    "Travel",
];

const NOUNS: [&str; 24] = [
    "Phone",
    "Headphones",
    "Laptop",
    "Sneakers",
    "Dress",
    "Watch",
    "Kettle",
    "Backpack",
    "Jeans",
    "Perfume",
    "Blender",
    "Lamp",
    "Chair",
    "Monitor",
    "Keyboard",
    "Jacket",
    "Stroller",
    "Carpet",
    "Mug",
    "Tablet",
    "Charger",
    "Handbag",
    "Sunglasses",
    "Toy Car",
];

// ---------------------------------------------------------------------------
// State.

#[derive(Clone, Copy)]
struct Item {
    product: u32,
    qty: u8,
    wish: bool,
}

struct User {
    /// Cart (`wish == false`) and wishlist (`wish == true`) entries.
    items: Vec<Item>,
    /// End of the last session, seconds since `start_ms`.
    last_end_s: u32,
    flags: u8,
}

#[derive(Clone, Copy)]
struct Product {
    price_cents: u32,
    stock: u32,
    flags: u8,
}

#[derive(Clone, Copy)]
struct Session {
    user: u32,
    left: u16,
    focus: u32,
    first: bool,
}

enum TaskKind {
    Step(Session),
    Deliver {
        user: u32,
        order: u64,
        product: u32,
    },
    Cancel {
        user: u32,
        order: u64,
        product: u32,
        reason: u8,
    },
    Review {
        user: u32,
        order: u64,
        product: u32,
    },
    Restock(u32),
}

struct Task {
    ts: u64,
    seq: u64,
    kind: TaskKind,
}

impl PartialEq for Task {
    fn eq(&self, other: &Self) -> bool {
        (self.ts, self.seq) == (other.ts, other.seq)
    }
}
impl Eq for Task {}
impl PartialOrd for Task {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Task {
    /// Reversed, so that the max-heap `BinaryHeap` pops the earliest task.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.ts, other.seq).cmp(&(self.ts, self.seq))
    }
}

#[derive(Clone, Copy)]
enum Topic {
    Tracking = 0,
    Prices = 1,
    Stock = 2,
    Catalog = 3,
}

impl Topic {
    fn name(self) -> &'static str {
        match self {
            Topic::Tracking => "tracking",
            Topic::Prices => "prices",
            Topic::Stock => "stock",
            Topic::Catalog => "catalog",
        }
    }
}

/// SplitMix64 finaliser: a stable, well-mixed hash of one integer.
fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// FNV-1a, the stable partitioning hash of a key.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

// --- hand-written JSON -------------------------------------------------------

/// A line being written: bytes that are all ASCII (checked once, when the
/// line is finished), cheaper to append to than a `String`.
struct Buf(Vec<u8>);

impl Buf {
    fn push_str(&mut self, x: &str) {
        self.0.extend_from_slice(x.as_bytes());
    }

    fn push(&mut self, c: char) {
        debug_assert!(c.is_ascii());
        self.0.push(c as u8);
    }
}

fn push_u64(s: &mut Buf, mut n: u64) {
    const DIGITS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    while n >= 100 {
        let d = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&DIGITS[d..d + 2]);
    }
    if n >= 10 {
        let d = n as usize * 2;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&DIGITS[d..d + 2]);
    } else {
        i -= 1;
        buf[i] = b'0' + n as u8;
    }
    s.0.extend_from_slice(&buf[i..]);
}

fn push_cents(s: &mut Buf, cents: u32) {
    push_u64(s, u64::from(cents / 100));
    let c = cents % 100;
    s.push('.');
    s.push((b'0' + (c / 10) as u8) as char);
    s.push((b'0' + (c % 10) as u8) as char);
}

/// `,"name":"value"` (value must not need escaping).
fn f_str(s: &mut Buf, name: &str, value: &str) {
    s.push_str(",\"");
    s.push_str(name);
    s.push_str("\":\"");
    s.push_str(value);
    s.push('"');
}

/// `,"name":"{prefix}{n}"`.
fn f_id(s: &mut Buf, name: &str, prefix: char, n: u64) {
    s.push_str(",\"");
    s.push_str(name);
    s.push_str("\":\"");
    s.push(prefix);
    push_u64(s, n);
    s.push('"');
}

fn f_u64(s: &mut Buf, name: &str, n: u64) {
    s.push_str(",\"");
    s.push_str(name);
    s.push_str("\":");
    push_u64(s, n);
}

fn f_price(s: &mut Buf, name: &str, cents: u32) {
    s.push_str(",\"");
    s.push_str(name);
    s.push_str("\":");
    push_cents(s, cents);
}

fn f_bool(s: &mut Buf, name: &str, b: bool) {
    s.push_str(",\"");
    s.push_str(name);
    s.push_str("\":");
    s.push_str(if b { "true" } else { "false" });
}

// ---------------------------------------------------------------------------
// The generator.

struct Generator {
    rng: ChaCha8Rng,
    seed: u64,
    start_ms: u64,
    limit: u64,
    emitted: u64,

    n_users: u32,
    n_products: u32,
    n_categories: u64,
    n_sellers: u64,
    anon_share: f64,

    users: Vec<User>,
    products: Vec<Product>,
    /// `(n_products + 1)^(1 - ZIPF_PRODUCTS) - 1`, for inverse-CDF sampling.
    zipf_span: f64,
    /// rank -> product id is `(rank * perm_mult + perm_off) % n_products`.
    perm_mult: u64,
    perm_off: u64,
    query_cdf: Vec<f64>,

    /// Pending session steps (many pops, small).
    heap: BinaryHeap<Task>,
    /// Pending deliveries, cancellations, reviews and restocks (few pops,
    /// larger: delays are long).
    slow: BinaryHeap<Task>,
    seq: u64,
    next_arrival: u64,
    next_update: u64,
    arrival_mean_ms: f64,
    update_mean_ms: f64,
    delivery_mean_ms: f64,
    restock_mean_ms: f64,
    min_session_gap_s: u32,
    /// Gaps between the events of a session: `step_gap_min_ms` plus an
    /// exponential with mean `step_gap_mean_ms` (about 35 s, shorter when
    /// there are too few users for the rate).
    step_gap_min_ms: u64,
    step_gap_mean_ms: f64,

    next_event: u64,
    next_order: u64,
    tracking_count: u64,
    anon_count: u64,
    forgotten: u32,

    offsets: [[u64; PARTITIONS as usize]; 4],
    key: Buf,
    out: VecDeque<String>,
}

fn cdf(n: usize, exponent: f64) -> Vec<f64> {
    let mut acc = 0.0;
    (0..n)
        .map(|r| {
            acc += 1.0 / ((r + 1) as f64).powf(exponent);
            acc
        })
        .collect()
}

impl Generator {
    fn new(args: &GenerateArgs) -> Self {
        let n_users = args.users.clamp(1, u64::from(u32::MAX - 1)) as u32;
        let n_products = args.products.clamp(1, u64::from(u32::MAX - 1)) as u32;
        let rate = if args.rate_per_s.is_finite() && args.rate_per_s > 0.0 {
            args.rate_per_s
        } else {
            50.0
        };
        let anon_share = if args.anonymous_share.is_finite() {
            args.anonymous_share.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let span_s = args.events as f64 / rate;
        let np = u64::from(n_products);
        let mut perm_mult = 0x9E37_79B1 % np;
        while perm_mult == 0 || gcd(perm_mult, np) != 1 {
            perm_mult = (perm_mult + 1) % np.max(2);
            if np == 1 {
                perm_mult = 1;
            }
        }
        let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
        let perm_off = rng.gen_range(0..np);
        let session_rate_per_ms =
            rate * (1.0 - PRODUCT_UPDATE_SHARE) / RECORDS_PER_SESSION / 1000.0;
        let update_rate_per_ms = rate * PRODUCT_UPDATE_SHARE / 1000.0;
        // At most about half the users may be in a session at once: with
        // few users and a high rate, sessions are compressed in time.
        let step_gap_mean_ms = (0.5 * f64::from(n_users)
            / (session_rate_per_ms * (SESSION_MEAN_STEPS - 1.0)))
            .clamp(1.0, 35_000.0);
        Generator {
            rng,
            seed: args.seed,
            start_ms: args.start_ms,
            limit: args.events,
            emitted: 0,
            n_users,
            n_products,
            n_categories: (np / 25).max(1),
            n_sellers: (np / 8).max(u64::from(GROUP)),
            anon_share,
            users: (0..n_users)
                .map(|_| User {
                    items: Vec::new(),
                    last_end_s: 0,
                    flags: 0,
                })
                .collect(),
            products: vec![
                Product {
                    price_cents: 0,
                    stock: 0,
                    flags: 0,
                };
                n_products as usize
            ],
            zipf_span: ((np + 1) as f64).powf(1.0 - ZIPF_PRODUCTS) - 1.0,
            perm_mult,
            perm_off,
            query_cdf: cdf(QUERIES.len(), 1.0),
            heap: BinaryHeap::new(),
            slow: BinaryHeap::new(),
            seq: 0,
            // The first record is a session start at exactly `start_ms`.
            next_arrival: args.start_ms,
            next_update: args.start_ms + 1,
            arrival_mean_ms: 1.0 / session_rate_per_ms,
            update_mean_ms: 1.0 / update_rate_per_ms,
            delivery_mean_ms: (span_s / 6.0).clamp(60.0, 2.0 * 86_400.0) * 1000.0,
            restock_mean_ms: (span_s / 20.0).clamp(30.0, 86_400.0) * 1000.0,
            // Hours when possible, but below the time between two sessions
            // of one user that the rate and the number of users imply.
            min_session_gap_s: (span_s / 10.0)
                .min(7_200.0)
                .min(0.5 * f64::from(n_users) / (session_rate_per_ms * 1000.0))
                as u32,
            step_gap_min_ms: (step_gap_mean_ms / 16.0).min(2_000.0) as u64,
            step_gap_mean_ms,
            next_event: 1,
            next_order: 1,
            tracking_count: 0,
            anon_count: 0,
            forgotten: 0,
            offsets: [[0; PARTITIONS as usize]; 4],
            key: Buf(Vec::with_capacity(24)),
            out: VecDeque::new(),
        }
    }

    // --- random helpers ---

    fn chance(&mut self, p: f64) -> bool {
        self.rng.gen::<f64>() < p
    }

    /// Exponentially distributed duration, in ms (at least 1).
    fn exp_ms(&mut self, mean_ms: f64) -> u64 {
        let u: f64 = self.rng.gen();
        ((-mean_ms * (1.0 - u).ln()) as u64).max(1)
    }

    fn scaled(&mut self, mean_ms: f64, lo: f64, hi: f64) -> u64 {
        let f = self.rng.gen_range(lo..hi);
        ((mean_ms * f) as u64).max(1)
    }

    fn sample_cdf(rng: &mut ChaCha8Rng, cdf: &[f64]) -> usize {
        let x = rng.gen::<f64>() * cdf[cdf.len() - 1];
        cdf.partition_point(|&c| c <= x).min(cdf.len() - 1)
    }

    /// A product by popularity: rank `r` (0-based) has weight about
    /// `(r + 1)^-ZIPF_PRODUCTS` (inverse CDF of the continuous Zipf law,
    /// so O(1) time and no table).
    fn sample_product(&mut self) -> u32 {
        let u: f64 = self.rng.gen();
        let x = (1.0 + u * self.zipf_span).powf(1.0 / (1.0 - ZIPF_PRODUCTS));
        let rank = ((x as u64).saturating_sub(1)).min(u64::from(self.n_products) - 1);
        ((rank * self.perm_mult + self.perm_off) % u64::from(self.n_products)) as u32
    }

    fn schedule(&mut self, ts: u64, kind: TaskKind) {
        self.seq += 1;
        let task = Task {
            ts,
            seq: self.seq,
            kind,
        };
        if matches!(task.kind, TaskKind::Step(_)) {
            self.heap.push(task);
        } else {
            self.slow.push(task);
        }
    }

    // --- fixed attributes derived from ids ---

    fn group_of(p: u32) -> u32 {
        p / GROUP
    }

    fn category_of(&self, p: u32) -> u64 {
        mix64(self.seed ^ 0xC47E_6021 ^ (u64::from(Self::group_of(p)) << 8)) % self.n_categories
    }

    fn seller_of(&self, p: u32) -> u64 {
        let base = mix64(self.seed ^ 0x5E11_E125 ^ (u64::from(Self::group_of(p)) << 8));
        (base + u64::from(p % GROUP)) % self.n_sellers
    }

    fn base_price_cents(&self, p: u32) -> u32 {
        let h = mix64(self.seed ^ 0x0912_1CE5 ^ (u64::from(Self::group_of(p)) << 8));
        let u = (h >> 11) as f64 / (1u64 << 53) as f64;
        // 2 .. ~600 (log-uniform), then +-15 % per seller.
        let base = 2.0 * (u * 5.7).exp();
        let seller = 0.85 + 0.15 * f64::from(p % GROUP);
        ((base * seller * 100.0) as u32).max(1)
    }

    /// (language, timezone, platform) of a user.
    fn user_locale(&self, u: u32) -> (&'static str, &'static str, &'static str) {
        let h = mix64(self.seed ^ 0x0010_CA1E ^ (u64::from(u) << 16));
        let l = h % 10;
        let t = (h >> 8) % 10;
        let (lang, tz) = if l < 6 {
            ("az", "Asia/Baku")
        } else if l < 8 {
            ("ru", if t < 7 { "Europe/Moscow" } else { "Asia/Baku" })
        } else {
            (
                "en",
                match t {
                    0..=4 => "Europe/London",
                    5..=6 => "Europe/Istanbul",
                    _ => "Asia/Baku",
                },
            )
        };
        let platform = match (h >> 16) % 10 {
            0..=4 => PLATFORMS[0],
            5..=7 => PLATFORMS[1],
            _ => PLATFORMS[2],
        };
        debug_assert!(LANGUAGES.contains(&lang));
        (lang, tz, platform)
    }

    // --- record framing ---

    /// Starts a record: the envelope up to and including `"value":{`.
    fn begin(&mut self, topic: Topic, key_prefix: char, key_n: u64, ts: u64) -> Buf {
        self.key.0.clear();
        self.key.push(key_prefix);
        push_u64(&mut self.key, key_n);
        let part = fnv1a(&self.key.0) % PARTITIONS;
        let slot = &mut self.offsets[topic as usize][part as usize];
        let offset = *slot;
        *slot += 1;
        let mut s = Buf(Vec::with_capacity(320));
        s.push_str("{\"topic\":\"");
        s.push_str(topic.name());
        s.push_str("\",\"partition\":");
        push_u64(&mut s, part);
        s.push_str(",\"offset\":");
        push_u64(&mut s, offset);
        s.push_str(",\"timestamp\":");
        push_u64(&mut s, ts);
        s.push_str(",\"key\":\"");
        s.0.extend_from_slice(&self.key.0);
        s.push_str("\",\"value\":{");
        s
    }

    fn finish(&mut self, mut s: Buf) {
        s.push_str("}}");
        self.out
            .push_back(String::from_utf8(s.0).expect("generated JSON is ASCII"));
    }

    /// Starts a tracking event of user `u` (sent with `anonymous_id` only
    /// while the user is anonymous).
    fn track(&mut self, ts: u64, u: u32, ty: &str) -> Buf {
        let anon = self.users[u as usize].flags & U_ANON != 0;
        let prefix = if anon { 'a' } else { 'u' };
        let mut s = self.begin(Topic::Tracking, prefix, u64::from(u), ts);
        s.push_str("\"event_id\":\"e");
        push_u64(&mut s, self.next_event);
        self.next_event += 1;
        s.push('"');
        f_str(&mut s, "type", ty);
        f_u64(&mut s, "ts", ts);
        f_id(
            &mut s,
            if anon { "anonymous_id" } else { "user_id" },
            prefix,
            u64::from(u),
        );
        self.tracking_count += 1;
        if anon {
            self.anon_count += 1;
        }
        s
    }

    /// Adds `context` and finishes a tracking event.
    fn finish_track(&mut self, mut s: Buf, u: u32) {
        let (lang, tz, platform) = self.user_locale(u);
        s.push_str(",\"context\":{\"language\":\"");
        s.push_str(lang);
        s.push_str("\",\"timezone\":\"");
        s.push_str(tz);
        s.push_str("\",\"platform\":\"");
        s.push_str(platform);
        s.push_str("\"}");
        self.finish(s);
    }

    fn emit_price(&mut self, p: u32, ts: u64) {
        let mut s = self.begin(Topic::Prices, 'p', u64::from(p), ts);
        s.push_str("\"product_id\":\"p");
        push_u64(&mut s, u64::from(p));
        s.push('"');
        f_price(&mut s, "price", self.products[p as usize].price_cents);
        f_str(&mut s, "currency", "AZN");
        f_u64(&mut s, "ts", ts);
        self.finish(s);
    }

    fn emit_stock(&mut self, p: u32, ts: u64) {
        let mut s = self.begin(Topic::Stock, 'p', u64::from(p), ts);
        s.push_str("\"product_id\":\"p");
        push_u64(&mut s, u64::from(p));
        s.push('"');
        f_u64(
            &mut s,
            "quantity",
            u64::from(self.products[p as usize].stock),
        );
        f_u64(&mut s, "ts", ts);
        self.finish(s);
    }

    fn emit_catalog(&mut self, p: u32, ts: u64) {
        let cat = self.category_of(p);
        let seller = self.seller_of(p);
        let mut s = self.begin(Topic::Catalog, 'p', u64::from(p), ts);
        s.push_str("\"product_id\":\"p");
        push_u64(&mut s, u64::from(p));
        s.push('"');
        f_id(&mut s, "category_id", 'c', cat);
        f_id(&mut s, "seller_id", 's', seller);
        f_id(&mut s, "group_id", 'g', u64::from(Self::group_of(p)));
        let h = mix64(self.seed ^ u64::from(Self::group_of(p)));
        s.push_str(",\"title\":\"");
        s.push_str(ADJECTIVES[(h % ADJECTIVES.len() as u64) as usize]);
        s.push(' ');
        s.push_str(NOUNS[(cat % NOUNS.len() as u64) as usize]);
        s.push(' ');
        push_u64(&mut s, u64::from(Self::group_of(p)));
        s.push_str("\",\"url\":\"https://shop.example/p/");
        push_u64(&mut s, u64::from(p));
        s.push_str("\",\"image_url\":\"https://img.shop.example/p/");
        push_u64(&mut s, u64::from(p));
        s.push_str(".jpg\"");
        f_u64(&mut s, "ts", ts);
        f_bool(&mut s, "deleted", false);
        self.finish(s);
    }

    /// On a product's first appearance: its catalog entry, first price and
    /// first stock level, all at `ts`.
    fn ensure_seen(&mut self, p: u32, ts: u64) {
        if self.products[p as usize].flags & P_SEEN != 0 {
            return;
        }
        let price = self.base_price_cents(p);
        let stock = if self.chance(0.03) {
            0
        } else {
            self.rng.gen_range(1..=500)
        };
        {
            let prod = &mut self.products[p as usize];
            prod.flags |= P_SEEN;
            prod.price_cents = price;
            prod.stock = stock;
        }
        self.emit_catalog(p, ts);
        self.emit_price(p, ts);
        self.emit_stock(p, ts);
        if stock == 0 {
            self.schedule_restock(p, ts);
        }
    }

    fn schedule_restock(&mut self, p: u32, ts: u64) {
        if self.products[p as usize].flags & P_RESTOCK_PENDING != 0 {
            return;
        }
        self.products[p as usize].flags |= P_RESTOCK_PENDING;
        let d = self.scaled(self.restock_mean_ms, 0.5, 1.5);
        self.schedule(ts + d, TaskKind::Restock(p));
    }

    // --- the main loop ---

    fn step(&mut self) {
        let top = |h: &BinaryHeap<Task>| h.peek().map_or((u64::MAX, 0), |t| (t.ts, t.seq));
        let (fast_top, slow_top) = (top(&self.heap), top(&self.slow));
        let heap_ts = fast_top.0.min(slow_top.0);
        if self.next_arrival <= self.next_update && self.next_arrival <= heap_ts {
            let t = self.next_arrival;
            self.next_arrival += self.exp_ms(self.arrival_mean_ms);
            self.session_start(t, t, true);
        } else if self.next_update <= heap_ts {
            let t = self.next_update;
            self.next_update += self.exp_ms(self.update_mean_ms);
            self.product_update(t);
        } else if let Some(task) = if fast_top <= slow_top {
            self.heap.pop()
        } else {
            self.slow.pop()
        } {
            let t = task.ts;
            match task.kind {
                TaskKind::Step(s) => self.session_step(t, s),
                TaskKind::Deliver {
                    user,
                    order,
                    product,
                } => self.deliver(t, user, order, product),
                TaskKind::Cancel {
                    user,
                    order,
                    product,
                    reason,
                } => self.cancel(t, user, order, product, reason),
                TaskKind::Review {
                    user,
                    order,
                    product,
                } => self.review(t, user, order, product),
                TaskKind::Restock(p) => self.restock(t, p),
            }
        }
    }

    /// Starts the sessions that are under way at `start_ms` in the steady
    /// state (about arrival rate x mean session duration of them, the
    /// residual length of a session being distributed like a whole one), so
    /// that the record rate does not ramp up from zero.
    fn warm_up(&mut self) {
        let gap = self.step_gap_min_ms as f64 + self.step_gap_mean_ms;
        let duration_ms = (SESSION_MEAN_STEPS - 1.0) * gap;
        let under_way = (duration_ms / self.arrival_mean_ms)
            .round()
            .min(f64::from(self.n_users / 2)) as u64;
        for _ in 0..under_way {
            let at = self.start_ms + self.exp_ms(gap);
            self.session_start(self.start_ms, at, false);
        }
    }

    /// A session arriving at `t` whose first step is at `first_at`.
    fn session_start(&mut self, t: u64, first_at: u64, first: bool) {
        let now_s = ((t - self.start_ms) / 1000) as u32;
        for attempt in 0..6 {
            let u = self.rng.gen_range(0..self.n_users);
            let user = &self.users[u as usize];
            if user.flags & (U_BUSY | U_FORGOTTEN) != 0 {
                continue;
            }
            if attempt < 3
                && user.flags & U_SEEN != 0
                && now_s.saturating_sub(user.last_end_s) < self.min_session_gap_s
            {
                continue;
            }
            let mut flags = user.flags | U_BUSY;
            if flags & U_SEEN == 0 {
                flags |= U_SEEN;
                // Start this new user anonymous while anonymous events are
                // below their target share.
                if self.anon_share > 0.0
                    && (self.anon_count as f64) < self.anon_share * (self.tracking_count + 1) as f64
                {
                    flags |= U_ANON;
                }
            }
            self.users[u as usize].flags = flags;
            let p_end = 1.0 / SESSION_MEAN_STEPS;
            let x: f64 = self.rng.gen();
            let extra = ((1.0 - x).ln() / (1.0 - p_end).ln()) as u64;
            let left = (1 + extra).min(60) as u16;
            self.schedule(
                first_at,
                TaskKind::Step(Session {
                    user: u,
                    left,
                    focus: NONE,
                    first,
                }),
            );
            return;
        }
    }

    fn session_step(&mut self, t: u64, mut s: Session) {
        let ended = self.session_event(t, &mut s);
        s.left = s.left.saturating_sub(1);
        s.first = false;
        if ended || s.left == 0 {
            let user = &mut self.users[s.user as usize];
            user.flags &= !U_BUSY;
            user.last_end_s = ((t - self.start_ms) / 1000).min(u64::from(u32::MAX)) as u32;
        } else {
            let gap = (self.step_gap_min_ms + self.exp_ms(self.step_gap_mean_ms)).min(600_000);
            self.schedule(t + gap, TaskKind::Step(s));
        }
    }

    /// Emits one session event; returns true when the session ends with it.
    fn session_event(&mut self, t: u64, s: &mut Session) -> bool {
        let u = s.user;
        let flags = self.users[u as usize].flags;
        let web = self.user_locale(u).2 == "web";
        if s.first && !web && self.chance(0.5) {
            let e = self.track(t, u, "app_open");
            self.finish_track(e, u);
            return false;
        }
        if flags & U_ANON != 0 && self.chance(0.2) {
            self.identify(t, u);
            return false;
        }
        let has_cart = self.users[u as usize].items.iter().any(|i| !i.wish);
        let has_wish = self.users[u as usize].items.iter().any(|i| i.wish);
        let r: f64 = self.rng.gen();
        let forget_ok = (u64::from(self.forgotten) + 1) * 2 <= u64::from(self.n_users);
        if r < 0.08 {
            self.category_view(t, s);
        } else if r < 0.16 {
            self.search(t, u);
        } else if r < 0.26 {
            self.cart_add(t, s);
        } else if r < 0.275 && has_cart {
            self.cart_remove(t, u);
        } else if (0.275..0.315).contains(&r) {
            self.wishlist_add(t, s);
        } else if (0.315..0.323).contains(&r) && has_wish {
            self.wishlist_remove(t, u);
        } else if (0.323..0.348).contains(&r) && has_cart && flags & U_ORDER_PENDING == 0 {
            self.order_placed(t, u);
        } else if (0.348..0.354).contains(&r) {
            self.consent(t, u);
        } else if (0.354..0.3544).contains(&r) && forget_ok {
            self.forget(t, u);
            return true;
        } else if (0.3544..0.364).contains(&r) && !web {
            let e = self.track(t, u, "app_open");
            self.finish_track(e, u);
        } else {
            self.product_view(t, s);
        }
        false
    }

    fn identify(&mut self, t: u64, u: u32) {
        self.users[u as usize].flags &= !U_ANON;
        let (lang, tz, _) = self.user_locale(u);
        let mut e = self.track(t, u, "identify");
        f_id(&mut e, "anonymous_id", 'a', u64::from(u));
        e.push_str(",\"traits\":{\"language\":\"");
        e.push_str(lang);
        e.push_str("\",\"timezone\":\"");
        e.push_str(tz);
        e.push('"');
        if self.chance(0.5) {
            e.push_str(",\"email\":\"u");
            push_u64(&mut e, u64::from(u));
            e.push_str("@example.com\"");
        }
        e.push('}');
        self.finish_track(e, u);
    }

    /// The product a session event is about: usually the one in focus (or
    /// one of its group), otherwise a popular one.
    fn pick_product(&mut self, s: &Session, focus_p: f64) -> u32 {
        if s.focus != NONE && self.chance(focus_p) {
            return s.focus;
        }
        self.sample_product()
    }

    fn product_view(&mut self, t: u64, s: &mut Session) {
        let p = if s.focus != NONE && self.chance(0.2) {
            // Another seller's offer of the same item.
            let g = Self::group_of(s.focus) * GROUP;
            (g + self.rng.gen_range(0..GROUP)).min(self.n_products - 1)
        } else {
            self.sample_product()
        };
        self.ensure_seen(p, t);
        s.focus = p;
        let cat = self.category_of(p);
        let price = self.products[p as usize].price_cents;
        let mut e = self.track(t, s.user, "product_view");
        f_id(&mut e, "product_id", 'p', u64::from(p));
        f_id(&mut e, "category_id", 'c', cat);
        f_price(&mut e, "price", price);
        self.finish_track(e, s.user);
    }

    fn category_view(&mut self, t: u64, s: &mut Session) {
        let p = self.pick_product(s, 0.6);
        let cat = self.category_of(p);
        let mut e = self.track(t, s.user, "category_view");
        f_id(&mut e, "category_id", 'c', cat);
        self.finish_track(e, s.user);
    }

    fn search(&mut self, t: u64, u: u32) {
        let q = QUERIES[Self::sample_cdf(&mut self.rng, &self.query_cdf)];
        let count = if self.chance(0.08) {
            0
        } else {
            self.rng.gen_range(1..=480)
        };
        let mut e = self.track(t, u, "search");
        f_str(&mut e, "query", q);
        f_u64(&mut e, "result_count", count);
        self.finish_track(e, u);
    }

    fn cart_add(&mut self, t: u64, s: &mut Session) {
        let p = self.pick_product(s, 0.8);
        self.ensure_seen(p, t);
        s.focus = p;
        let qty: u8 = match self.rng.gen_range(0..20) {
            0 => 3,
            1..=3 => 2,
            _ => 1,
        };
        let items = &mut self.users[s.user as usize].items;
        if let Some(i) = items.iter_mut().find(|i| !i.wish && i.product == p) {
            i.qty = qty;
        } else if items.len() < MAX_ITEMS {
            items.push(Item {
                product: p,
                qty,
                wish: false,
            });
        }
        let price = self.products[p as usize].price_cents;
        let mut e = self.track(t, s.user, "cart_add");
        f_id(&mut e, "product_id", 'p', u64::from(p));
        f_u64(&mut e, "quantity", u64::from(qty));
        f_price(&mut e, "price", price);
        self.finish_track(e, s.user);
    }

    fn remove_random(&mut self, u: u32, wish: bool) -> u32 {
        let items = &mut self.users[u as usize].items;
        let n = items.iter().filter(|i| i.wish == wish).count();
        let k = self.rng.gen_range(0..n);
        let idx = items
            .iter()
            .enumerate()
            .filter(|(_, i)| i.wish == wish)
            .nth(k)
            .map(|(idx, _)| idx)
            .expect("k < n");
        items.remove(idx).product
    }

    fn cart_remove(&mut self, t: u64, u: u32) {
        let p = self.remove_random(u, false);
        let mut e = self.track(t, u, "cart_remove");
        f_id(&mut e, "product_id", 'p', u64::from(p));
        self.finish_track(e, u);
    }

    fn wishlist_add(&mut self, t: u64, s: &mut Session) {
        let p = self.pick_product(s, 0.7);
        self.ensure_seen(p, t);
        let items = &mut self.users[s.user as usize].items;
        if !items.iter().any(|i| i.wish && i.product == p) && items.len() < MAX_ITEMS {
            items.push(Item {
                product: p,
                qty: 1,
                wish: true,
            });
        }
        let mut e = self.track(t, s.user, "wishlist_add");
        f_id(&mut e, "product_id", 'p', u64::from(p));
        self.finish_track(e, s.user);
    }

    fn wishlist_remove(&mut self, t: u64, u: u32) {
        let p = self.remove_random(u, true);
        let mut e = self.track(t, u, "wishlist_remove");
        f_id(&mut e, "product_id", 'p', u64::from(p));
        self.finish_track(e, u);
    }

    fn order_placed(&mut self, t: u64, u: u32) {
        if self.users[u as usize].flags & U_ANON != 0 {
            // Checkout needs an account.
            self.identify(t, u);
        }
        let items = std::mem::take(&mut self.users[u as usize].items);
        let (cart, mut rest): (Vec<Item>, Vec<Item>) = items.into_iter().partition(|i| !i.wish);
        rest.retain(|w| !cart.iter().any(|c| c.product == w.product));
        self.users[u as usize].items = rest;
        let order = self.next_order;
        self.next_order += 1;
        let mut e = self.track(t, u, "order_placed");
        f_id(&mut e, "order_id", 'o', order);
        e.push_str(",\"items\":[");
        for (k, it) in cart.iter().enumerate() {
            if k > 0 {
                e.push(',');
            }
            e.push_str("{\"product_id\":\"p");
            push_u64(&mut e, u64::from(it.product));
            e.push('"');
            f_u64(&mut e, "quantity", u64::from(it.qty));
            f_price(
                &mut e,
                "price",
                self.products[it.product as usize].price_cents,
            );
            f_id(&mut e, "seller_id", 's', self.seller_of(it.product));
            e.push('}');
        }
        e.push(']');
        let pay = match self.rng.gen_range(0..10) {
            0..=5 => PAYMENTS[0],
            6..=8 => PAYMENTS[1],
            _ => PAYMENTS[2],
        };
        f_str(&mut e, "payment", pay);
        self.finish_track(e, u);

        self.users[u as usize].flags |= U_ORDER_PENDING;
        let product = cart
            .iter()
            .max_by_key(|i| self.products[i.product as usize].price_cents)
            .map_or(cart[0].product, |i| i.product);
        if self.chance(0.1) {
            let reason = match self.rng.gen_range(0..20) {
                0..=8 => 0,
                9..=16 => 1,
                _ => 2,
            };
            let d = self.scaled(self.delivery_mean_ms, 0.1, 0.5);
            self.schedule(
                t + d,
                TaskKind::Cancel {
                    user: u,
                    order,
                    product,
                    reason,
                },
            );
        } else {
            let d = self.scaled(self.delivery_mean_ms, 0.5, 1.5);
            self.schedule(
                t + d,
                TaskKind::Deliver {
                    user: u,
                    order,
                    product,
                },
            );
        }
    }

    fn consent(&mut self, t: u64, u: u32) {
        let flags = self.users[u as usize].flags;
        if flags & U_OPTED_OUT != 0 {
            self.users[u as usize].flags &= !U_OPTED_OUT;
            let ch = CHANNELS[self.rng.gen_range(0..CHANNELS.len())];
            let mut e = self.track(t, u, "consent");
            f_str(&mut e, "channel", ch);
            f_bool(&mut e, "granted", true);
            self.finish_track(e, u);
        } else if self.chance(0.2) {
            // Rarely: every channel refused at once.
            self.users[u as usize].flags |= U_OPTED_OUT;
            for ch in CHANNELS {
                let mut e = self.track(t, u, "consent");
                f_str(&mut e, "channel", ch);
                f_bool(&mut e, "granted", false);
                self.finish_track(e, u);
            }
        } else {
            let ch = CHANNELS[self.rng.gen_range(0..CHANNELS.len())];
            let granted = self.chance(0.7);
            let mut e = self.track(t, u, "consent");
            f_str(&mut e, "channel", ch);
            f_bool(&mut e, "granted", granted);
            self.finish_track(e, u);
        }
    }

    fn forget(&mut self, t: u64, u: u32) {
        let e = self.track(t, u, "forget");
        self.finish_track(e, u);
        let user = &mut self.users[u as usize];
        user.flags |= U_FORGOTTEN;
        user.items = Vec::new();
        self.forgotten += 1;
    }

    fn deliver(&mut self, t: u64, u: u32, order: u64, product: u32) {
        if self.users[u as usize].flags & U_FORGOTTEN != 0 {
            self.users[u as usize].flags &= !U_ORDER_PENDING;
            return;
        }
        let mut e = self.track(t, u, "order_delivered");
        f_id(&mut e, "order_id", 'o', order);
        self.finish(e);
        if self.chance(0.4) {
            let d = self.scaled(self.delivery_mean_ms, 0.2, 1.0);
            self.schedule(
                t + d,
                TaskKind::Review {
                    user: u,
                    order,
                    product,
                },
            );
        } else {
            self.users[u as usize].flags &= !U_ORDER_PENDING;
        }
    }

    fn cancel(&mut self, t: u64, u: u32, order: u64, product: u32, reason: u8) {
        self.users[u as usize].flags &= !U_ORDER_PENDING;
        if self.users[u as usize].flags & U_FORGOTTEN != 0 {
            return;
        }
        if reason == 0 && self.products[product as usize].stock != 0 {
            self.products[product as usize].stock = 0;
            self.emit_stock(product, t);
            self.schedule_restock(product, t);
        }
        let mut e = self.track(t, u, "order_cancelled");
        f_id(&mut e, "order_id", 'o', order);
        f_str(&mut e, "reason", CANCEL_REASONS[reason as usize]);
        self.finish(e);
    }

    fn review(&mut self, t: u64, u: u32, order: u64, product: u32) {
        self.users[u as usize].flags &= !U_ORDER_PENDING;
        if self.users[u as usize].flags & U_FORGOTTEN != 0 {
            return;
        }
        let seller = self.seller_of(product);
        let mut e = self.track(t, u, "review_submitted");
        f_id(&mut e, "order_id", 'o', order);
        f_id(&mut e, "product_id", 'p', u64::from(product));
        f_id(&mut e, "seller_id", 's', seller);
        self.finish_track(e, u);
    }

    fn restock(&mut self, t: u64, p: u32) {
        let prod = &mut self.products[p as usize];
        prod.flags &= !P_RESTOCK_PENDING;
        if prod.stock == 0 {
            prod.stock = self.rng.gen_range(5..=100);
            self.emit_stock(p, t);
        }
    }

    fn product_update(&mut self, t: u64) {
        let p = self.sample_product();
        if self.products[p as usize].flags & P_SEEN == 0 {
            self.ensure_seen(p, t);
            return;
        }
        let prod = self.products[p as usize];
        if prod.stock == 0 || self.chance(0.55) {
            let old = f64::from(prod.price_cents);
            let new = if self.chance(0.6) {
                old * (1.0 - self.rng.gen_range(0.03..=0.30))
            } else {
                old * (1.0 + self.rng.gen_range(0.02..=0.20))
            };
            self.products[p as usize].price_cents = (new.round() as u32).max(1);
            self.emit_price(p, t);
        } else {
            if self.chance(0.15) {
                self.products[p as usize].stock = 0;
                self.schedule_restock(p, t);
            } else {
                self.products[p as usize].stock = self.rng.gen_range(1..=300);
            }
            self.emit_stock(p, t);
        }
    }
}

impl Iterator for Generator {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        loop {
            if self.emitted >= self.limit {
                return None;
            }
            if let Some(line) = self.out.pop_front() {
                self.emitted += 1;
                return Some(line);
            }
            self.step();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashSet};

    fn small(events: u64, seed: u64) -> GenerateArgs {
        GenerateArgs {
            events,
            users: 2_000,
            products: 300,
            seed,
            start_ms: 1_700_000_000_000,
            rate_per_s: 0.08,
            anonymous_share: 0.05,
        }
    }

    #[test]
    fn same_seed_same_output() {
        let a: Vec<String> = lines(&small(5_000, 7)).collect();
        let b: Vec<String> = lines(&small(5_000, 7)).collect();
        assert_eq!(a, b);
    }

    #[test]
    fn different_seeds_differ() {
        let a: Vec<String> = lines(&small(2_000, 1)).collect();
        let b: Vec<String> = lines(&small(2_000, 2)).collect();
        assert_ne!(a, b);
    }

    #[test]
    fn prefix_of_longer_run() {
        let a: Vec<String> = lines(&small(1_000, 3)).collect();
        let b: Vec<String> = lines(&small(3_000, 3)).take(1_000).collect();
        // Delays scale with the span, so only the first records must agree.
        assert_eq!(a[..10], b[..10]);
    }

    #[test]
    fn counts_right() {
        for n in [0u64, 1, 2, 3, 17, 1_000, 20_000] {
            assert_eq!(lines(&small(n, 5)).count() as u64, n);
        }
        let mut buf = Vec::new();
        assert_eq!(write_jsonl(&small(500, 5), &mut buf).unwrap(), 500);
        assert_eq!(buf.iter().filter(|&&b| b == b'\n').count(), 500);
        assert_eq!(records(&GenerateArgs::default()).take(10).count(), 10);
    }

    #[test]
    fn times_non_decreasing_and_envelope_consistent() {
        let args = small(20_000, 11);
        let mut last = 0u64;
        let mut offsets: BTreeMap<(String, u64), u64> = BTreeMap::new();
        let mut event_ids = HashSet::new();
        let mut first = true;
        for r in records(&args) {
            let ts = r["timestamp"].as_u64().unwrap();
            if first {
                assert_eq!(ts, args.start_ms);
                first = false;
            }
            assert!(ts >= last, "time went back: {r}");
            last = ts;
            assert_eq!(r["value"]["ts"].as_u64(), Some(ts));
            let topic = r["topic"].as_str().unwrap().to_string();
            let part = r["partition"].as_u64().unwrap();
            assert!(part < PARTITIONS);
            let key = r["key"].as_str().unwrap();
            assert_eq!(fnv1a(key.as_bytes()) % PARTITIONS, part);
            let next = offsets.entry((topic.clone(), part)).or_insert(0);
            assert_eq!(r["offset"].as_u64(), Some(*next));
            *next += 1;
            let v = &r["value"];
            if topic == "tracking" {
                let expect = v["user_id"].as_str().or(v["anonymous_id"].as_str());
                assert_eq!(Some(key), expect);
                assert!(event_ids.insert(v["event_id"].as_str().unwrap().to_string()));
            } else {
                assert_eq!(Some(key), v["product_id"].as_str());
            }
        }
        // About events / rate: 20_000 / 0.08 s = 250_000 s.
        let span_s = (last - args.start_ms) as f64 / 1000.0;
        assert!(span_s > 150_000.0 && span_s < 350_000.0, "span {span_s}");
    }

    #[test]
    fn every_event_type_appears() {
        let mut seen: BTreeMap<String, u64> = BTreeMap::new();
        let mut anon = 0u64;
        let mut tracking = 0u64;
        let mut drops = 0u64;
        let mut last_price: BTreeMap<String, f64> = BTreeMap::new();
        let mut zero_then_back = 0u64;
        let mut zero: HashSet<String> = HashSet::new();
        for r in records(&small(20_000, 42)) {
            let v = &r["value"];
            let topic = r["topic"].as_str().unwrap();
            let name = match topic {
                "tracking" => {
                    tracking += 1;
                    if v.get("user_id").is_none() {
                        anon += 1;
                    }
                    v["type"].as_str().unwrap().to_string()
                }
                t => t.to_string(),
            };
            if topic == "prices" {
                let p = v["product_id"].as_str().unwrap().to_string();
                let price = v["price"].as_f64().unwrap();
                if let Some(old) = last_price.insert(p, price) {
                    if price <= old * 0.95 {
                        drops += 1;
                    }
                }
            }
            if topic == "stock" {
                let p = v["product_id"].as_str().unwrap().to_string();
                if v["quantity"].as_u64() == Some(0) {
                    zero.insert(p);
                } else if zero.remove(&p) {
                    zero_then_back += 1;
                }
            }
            *seen.entry(name).or_default() += 1;
        }
        for ty in [
            "product_view",
            "category_view",
            "search",
            "cart_add",
            "cart_remove",
            "wishlist_add",
            "wishlist_remove",
            "order_placed",
            "order_delivered",
            "order_cancelled",
            "review_submitted",
            "app_open",
            "identify",
            "consent",
            "forget",
            "prices",
            "stock",
            "catalog",
        ] {
            assert!(seen.get(ty).copied().unwrap_or(0) > 0, "no {ty}: {seen:?}");
        }
        let share = anon as f64 / tracking as f64;
        assert!(share > 0.02 && share < 0.08, "anonymous share {share}");
        assert!(drops > 0 && zero_then_back > 0);
    }

    #[test]
    fn degenerate_arguments_terminate() {
        for (users, products) in [(1, 1), (1, 5), (3, 1)] {
            let args = GenerateArgs {
                events: 2_000,
                users,
                products,
                rate_per_s: 0.0,
                anonymous_share: 1.0,
                ..GenerateArgs::default()
            };
            assert_eq!(records(&args).count(), 2_000);
        }
    }
}

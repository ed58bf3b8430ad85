//! splitmix64, the generator's only source of randomness.
//!
//! Small, fast, and the same on every machine: it works on `u64` alone
//! (never `usize` state, floats or the platform's hasher), so a seed gives
//! the same events on a 32-bit or 64-bit, little- or big-endian host.

/// The splitmix64 increment (the golden ratio in 64 bits).
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// splitmix64's output function: a good 64-bit mixer on its own.
pub(crate) const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A splitmix64 generator.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GAMMA);
        mix64(self.0)
    }

    /// Uniform in `0..n` (`n` > 0; the modulo bias is irrelevant here).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as i64
    }

    /// Uniform in `lo..=hi`, for counts.
    pub(crate) fn range_usize(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// True `percent` times in 100.
    pub(crate) fn percent(&mut self, percent: u8) -> bool {
        self.next_u64() % 100 < u64::from(percent)
    }

    pub(crate) fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    /// Appends `len` lowercase hex digits.
    pub(crate) fn push_hex(&mut self, out: &mut String, len: usize) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut bits = 0;
        let mut word = 0;
        for _ in 0..len {
            if bits == 0 {
                word = self.next_u64();
                bits = 16;
            }
            out.push(char::from(DIGITS[(word & 0xf) as usize]));
            word >>= 4;
            bits -= 1;
        }
    }

    pub(crate) fn hex(&mut self, len: usize) -> String {
        let mut out = String::with_capacity(len);
        self.push_hex(&mut out, len);
        out
    }

    /// `len` letters and digits.
    pub(crate) fn alnum(&mut self, len: usize) -> String {
        const CHARS: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let mut out = String::with_capacity(len);
        let mut chunks = 0;
        let mut word = 0;
        for _ in 0..len {
            if chunks == 0 {
                word = self.next_u64();
                chunks = 10;
            }
            out.push(char::from(CHARS[(word & 0x3f) as usize % CHARS.len()]));
            word >>= 6;
            chunks -= 1;
        }
        out
    }

    /// A version-4 UUID, lowercase; it ends with 12 hex digits.
    pub(crate) fn uuid(&mut self) -> String {
        let high = self.next_u64();
        let low = self.next_u64();
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            high >> 32,
            (high >> 16) & 0xffff,
            high & 0xfff,
            ((low >> 48) & 0x3fff) | 0x8000,
            low & 0xffff_ffff_ffff
        )
    }

    /// A Braze object id (24 hex digits), as `user_id` and `dispatch_id` are.
    pub(crate) fn object_id(&mut self) -> String {
        self.hex(24)
    }
}

//! Choices for the mutators, drawn from the project's one seeded generator.

use pare_kernels::rng::SplitMix64;

/// Integers that break arithmetic: zero, negatives, one past small sizes, the edges of i32 and
/// i64, and values whose product with a few others overflows.
const EDGES: [i64; 16] = [
    0,
    1,
    -1,
    2,
    -2,
    3,
    7,
    64,
    1 << 16,
    1 << 31,
    1 << 32,
    1 << 40,
    3_037_000_500, // its square overflows i64
    i32::MAX as i64,
    i64::MAX,
    i64::MIN,
];

pub struct Dice(SplitMix64);

impl Dice {
    pub fn new(seed: u64) -> Self {
        Dice(SplitMix64::new(seed))
    }

    /// A uniform value in `0..n`; 0 when `n` is 0, so callers can index only non-empty lists.
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        self.0.below(n as u64) as usize
    }

    /// True once in `denominator` draws on average.
    pub fn one_in(&mut self, denominator: usize) -> bool {
        self.below(denominator) == 0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        items.get(self.below(items.len()))
    }

    pub fn byte(&mut self) -> u8 {
        self.0.next_u64() as u8
    }

    /// An edge value most of the time, otherwise any small number.
    pub fn edgy_int(&mut self) -> i64 {
        if self.one_in(4) {
            self.below(20) as i64 - 4
        } else {
            EDGES[self.below(EDGES.len())]
        }
    }

    /// A float that breaks arithmetic: zeros, NaN, infinities, subnormals, huge values.
    pub fn edgy_float(&mut self) -> f32 {
        let edges = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MIN_POSITIVE / 2.0,
            f32::MAX,
            1e-30,
        ];
        edges[self.below(edges.len())]
    }
}

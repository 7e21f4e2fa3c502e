//! Byte-level mutations of an encoded model: what a truncated download, a flipped bit or two
//! files glued together look like to the decoder.

use crate::dice::Dice;

/// Applies one byte-level mutation to `bytes`; `other` is a second model to splice with.
pub fn mutate(bytes: &mut Vec<u8>, other: &[u8], dice: &mut Dice) {
    let len = bytes.len();
    match dice.below(6) {
        0 => {
            // A few flipped bits, anywhere.
            for _ in 0..1 + dice.below(8) {
                if let Some(b) = bytes.get_mut(dice.below(len)) {
                    *b ^= 1 << dice.below(8);
                }
            }
        }
        1 => bytes.truncate(dice.below(len)),
        2 => {
            let at = dice.below(len + 1);
            let run: Vec<u8> = (0..1 + dice.below(16)).map(|_| dice.byte()).collect();
            bytes.splice(at..at, run);
        }
        3 => {
            // The head of one model with the tail of another.
            let head = dice.below(len + 1);
            let tail = dice.below(other.len() + 1);
            bytes.truncate(head);
            bytes.extend_from_slice(&other[tail..]);
        }
        4 => {
            // A byte that is often a protobuf tag or length: varint continuation, wire types.
            let edges = [0x00, 0x7f, 0x80, 0xff, 0x08, 0x0a, 0x12, 0x1a];
            for _ in 0..1 + dice.below(4) {
                let value = edges[dice.below(edges.len())];
                if let Some(b) = bytes.get_mut(dice.below(len)) {
                    *b = value;
                }
            }
        }
        _ => {
            // A run of the model copied over another place of itself.
            let from = dice.below(len);
            let to = dice.below(len);
            let n = dice.below(64).min(len - from.max(to));
            bytes.copy_within(from..from + n, to);
        }
    }
}

//! The genome of the search: one bit per channel of every prunable group, the groups in id
//! order (1 keeps the channel). A genome always decodes to a valid plan: every group keeps at
//! least its floor, and a group that shrinks keeps a multiple of `round_to`
//! (docs/methods/es.md, "Genome").

use crate::groups::{ChannelGroups, GroupId};
use crate::plan::PruningPlan;
use pare_kernels::rng::{permutation, SplitMix64};

/// Which channels of each prunable group an individual keeps, one bit per channel.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Genome(Vec<bool>);

impl Genome {
    pub fn bits(&self) -> &[bool] {
        &self.0
    }
}

/// One group's run of bits.
#[derive(Debug, Clone, PartialEq)]
struct Genes {
    group: GroupId,
    offset: usize,
    width: usize,
    /// The fewest channels the group may keep, already a multiple of `round_to` (or the width).
    floor: usize,
}

/// Where each prunable group's bits lie, and what each group may keep.
#[derive(Debug, Clone, PartialEq)]
pub struct GenomeLayout {
    genes: Vec<Genes>,
    round_to: usize,
}

impl GenomeLayout {
    /// The layout over the prunable groups of `groups`; a group keeps at least `floor(width)`
    /// channels, and widths that shrink stay multiples of `round_to`.
    pub fn new(
        groups: &ChannelGroups,
        floor: impl Fn(usize) -> usize,
        round_to: usize,
    ) -> GenomeLayout {
        let n = round_to.max(1);
        let mut offset = 0;
        let genes = groups
            .groups
            .iter()
            .filter(|g| g.prunable())
            .map(|g| {
                let width = g.channels;
                let genes = Genes {
                    group: g.id,
                    offset,
                    width,
                    floor: (floor(width).clamp(1, width).div_ceil(n) * n).min(width),
                };
                offset += width;
                genes
            })
            .collect();
        GenomeLayout { genes, round_to: n }
    }

    /// Bits in a genome.
    pub fn len(&self) -> usize {
        self.genes.last().map_or(0, |g| g.offset + g.width)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The groups in genome order.
    pub fn groups(&self) -> impl Iterator<Item = (GroupId, usize)> + '_ {
        self.genes.iter().map(|g| (g.group, g.width))
    }

    /// The unpruned network: every bit set.
    pub fn full(&self) -> Genome {
        Genome(vec![true; self.len()])
    }

    /// Whether a group may keep `kept` of its channels.
    fn allowed(&self, genes: &Genes, kept: usize) -> bool {
        kept == genes.width || (kept >= genes.floor && kept.is_multiple_of(self.round_to))
    }

    /// A child of `parent`: every bit flipped with probability `rate`, then each group repaired.
    pub fn mutate(&self, parent: &Genome, rate: f64, rng: &mut SplitMix64) -> Genome {
        let mut bits = parent.0.clone();
        for bit in &mut bits {
            if rng.unit_f64() < rate {
                *bit = !*bit;
            }
        }
        self.repair(&mut bits, rng);
        Genome(bits)
    }

    /// Brings every group to the nearest width it may keep (the larger on a tie), switching
    /// randomly chosen bits on or off: the floor replaces the guard against an empty group, and
    /// rounding here means decoding never has to choose channels.
    fn repair(&self, bits: &mut [bool], rng: &mut SplitMix64) {
        for genes in &self.genes {
            let run = &mut bits[genes.offset..genes.offset + genes.width];
            let kept = run.iter().filter(|&&b| b).count();
            if self.allowed(genes, kept) {
                continue;
            }
            let up = (kept + 1..=genes.width)
                .find(|&k| self.allowed(genes, k))
                .unwrap_or(genes.width);
            let down = (genes.floor..kept).rev().find(|&k| self.allowed(genes, k));
            let goal = match down {
                Some(down) if kept - down < up - kept => down,
                _ => up,
            };
            // Switch on (or off) the first bits of a random order that are off (on).
            let switch_on = goal > kept;
            let mut change = goal.abs_diff(kept);
            for i in permutation(genes.width, rng.next_u64()) {
                if change == 0 {
                    break;
                }
                if run[i] != switch_on {
                    run[i] = switch_on;
                    change -= 1;
                }
            }
        }
    }

    /// Channels kept per group, in genome order.
    pub fn kept(&self, genome: &Genome) -> Vec<usize> {
        self.genes
            .iter()
            .map(|g| {
                genome.0[g.offset..g.offset + g.width]
                    .iter()
                    .filter(|&&b| b)
                    .count()
            })
            .collect()
    }

    /// The plan that drops every channel whose bit is off.
    pub fn plan(&self, genome: &Genome) -> PruningPlan {
        let mut plan = PruningPlan::default();
        for g in &self.genes {
            let run = &genome.0[g.offset..g.offset + g.width];
            let dropped: Vec<usize> = (0..g.width).filter(|&c| !run[c]).collect();
            if !dropped.is_empty() {
                plan.drop_channels(g.group, dropped);
            }
        }
        plan
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::groups::Group;

    /// Groups of the given widths, each prunable, without slices (enough for the layout).
    pub(crate) fn groups(widths: &[usize]) -> ChannelGroups {
        let mut g = crate::groups::analyze(&pare_ir::Graph::default());
        g.groups = widths
            .iter()
            .enumerate()
            .map(|(i, &channels)| Group {
                id: GroupId(i as u32),
                channels,
                values: Vec::new(),
                frozen: Vec::new(),
                slices: Vec::new(),
            })
            .collect();
        g
    }

    #[test]
    fn the_layout_follows_the_prunable_groups_in_order() {
        let mut g = groups(&[4, 1, 6]);
        g.groups.push(Group {
            id: GroupId(3),
            channels: 8,
            values: Vec::new(),
            frozen: vec!["reaches the output".into()],
            slices: Vec::new(),
        });
        let layout = GenomeLayout::new(&g, |_| 1, 1);
        // The one-channel group and the frozen one have no bits.
        assert_eq!(layout.len(), 10);
        let ids: Vec<(GroupId, usize)> = layout.groups().collect();
        assert_eq!(ids, vec![(GroupId(0), 4), (GroupId(2), 6)]);
        assert_eq!(layout.kept(&layout.full()), vec![4, 6]);
        assert_eq!(layout.plan(&layout.full()), PruningPlan::default());
    }

    #[test]
    fn mutation_keeps_every_floor_and_multiple() {
        let g = groups(&[16, 10, 3, 40]);
        // Keep at least 30%, widths that shrink a multiple of 4.
        let floor = |w: usize| (0.3 * w as f64).ceil() as usize;
        let layout = GenomeLayout::new(&g, floor, 4);
        let mut rng = SplitMix64::new(7);
        let mut genome = layout.full();
        for round in 0..300 {
            // High rates empty groups often; the repair must bring them back.
            let rate = [0.05, 0.5, 0.95][round % 3];
            genome = layout.mutate(&genome, rate, &mut rng);
            for ((_, width), kept) in layout.groups().zip(layout.kept(&genome)) {
                let floor = floor(width).div_ceil(4) * 4;
                assert!(
                    kept == width || (kept % 4 == 0 && kept >= floor),
                    "{width}: {kept}"
                );
            }
        }
        // A group of 3 cannot shrink to a multiple of 4: it always keeps all three.
        assert_eq!(layout.kept(&genome)[2], 3);
    }

    #[test]
    fn a_zero_rate_copies_the_parent_and_an_all_ones_rate_inverts_it_within_the_guard() {
        let g = groups(&[8, 8]);
        let layout = GenomeLayout::new(&g, |_| 1, 1);
        let mut rng = SplitMix64::new(1);
        let full = layout.full();
        assert_eq!(layout.mutate(&full, 0.0, &mut rng), full);
        // Every bit flips off; the guard switches exactly one channel back on in each group.
        let inverted = layout.mutate(&full, 1.0, &mut rng);
        assert_eq!(layout.kept(&inverted), vec![1, 1]);
        let plan = layout.plan(&inverted);
        assert_eq!(plan.drop[&GroupId(0)].len(), 7);
    }

    #[test]
    fn mutation_is_deterministic_by_seed() {
        let layout = GenomeLayout::new(&groups(&[32, 64]), |_| 2, 2);
        let run = |seed| {
            let mut rng = SplitMix64::new(seed);
            let mut genome = layout.full();
            for _ in 0..10 {
                genome = layout.mutate(&genome, 0.2, &mut rng);
            }
            genome
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }

    #[test]
    fn the_plan_drops_exactly_the_bits_that_are_off() {
        let layout = GenomeLayout::new(&groups(&[3, 2]), |_| 1, 1);
        let genome = Genome(vec![true, false, false, true, true]);
        let plan = layout.plan(&genome);
        assert_eq!(plan.drop[&GroupId(0)], vec![1, 2]);
        assert!(!plan.drop.contains_key(&GroupId(1)));
    }
}

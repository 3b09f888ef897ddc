//! Pack compaction. At one run a second each run leaves a small pack, and
//! a snapshot deep in the chain would need every one that still holds a
//! live page: hundreds of pack references in each manifest and hundreds of
//! GETs per restore. So each run folds the live pages of the chain's small
//! packs into its own new packs, tiered as an LSM tree levels its files:
//! a pack's tier is the base-8 order of its live pages, and when a tier
//! holds [`FAN_IN`] small packs (this run's new pages count as one) every
//! small pack of that tier and below is folded, which may fill the next
//! tier in turn. A pack with at least half of [`PACK_RAW_BYTES`] live is
//! settled and left alone. After any run, then, a snapshot needs at most
//! `FAN_IN - 1` small packs per tier plus the settled ones (at most two per
//! [`PACK_RAW_BYTES`] of image), and a page is copied about once per tier.
//!
//! Folding is nothing but storing more pages: the pages come from the
//! run's own pinned snapshot (a folded page is unchanged, so it equals the
//! copy in the old pack), and the old packs stay where they are for the
//! older snapshots that name them, until prune's two-phase collection frees
//! them. A run killed while folding is a run killed while storing.

use std::collections::BTreeMap;

use crate::incremental::PACK_RAW_BYTES;
use crate::page_map::{PackRef, Run};

/// Small packs of one tier that trigger a fold.
pub const FAN_IN: usize = 8;

/// What a run folded into its own packs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Folded {
    /// Earlier packs no longer needed by the new snapshot.
    pub packs: usize,
    /// Unchanged pages the run stores again.
    pub pages: u64,
}

/// Pages a pack must hold live to be left alone.
pub fn settled_pages(page_size: u64) -> u64 {
    (PACK_RAW_BYTES / page_size.max(1) / 2).max(1)
}

fn tier(pages: u64) -> u32 {
    pages.max(1).ilog(FAN_IN as u64)
}

/// Decide which of the previous snapshot's `packs` (its page map's runs
/// are `previous`) this run folds, and mark their live pages in `changed`
/// (this run's image, `true` = stored by this run).
pub fn fold(previous: &[Run], packs: usize, changed: &mut [bool], page_size: u64) -> Folded {
    let pages = changed.len() as u64;
    let mut live = vec![0u64; packs];
    for r in previous {
        let end = r.end().min(pages);
        if r.first < end {
            let unchanged = changed[r.first as usize..end as usize]
                .iter()
                .filter(|c| !**c)
                .count();
            live[r.pack as usize] += unchanged as u64;
        }
    }
    let settled = settled_pages(page_size);
    let mut new = changed.iter().filter(|c| **c).count() as u64;
    let mut folded = vec![false; packs];
    let small = |n: u64| n > 0 && n < settled;
    loop {
        let mut per_tier: BTreeMap<u32, usize> = BTreeMap::new();
        for (p, &n) in live.iter().enumerate() {
            if small(n) && !folded[p] {
                *per_tier.entry(tier(n)).or_default() += 1;
            }
        }
        if small(new) {
            *per_tier.entry(tier(new)).or_default() += 1;
        }
        let Some((&full, _)) = per_tier.iter().find(|(_, n)| **n >= FAN_IN) else {
            break;
        };
        for (p, &n) in live.iter().enumerate() {
            if small(n) && !folded[p] && tier(n) <= full {
                folded[p] = true;
                new += n;
            }
        }
    }
    let mut out = Folded::default();
    for r in previous {
        if !folded[r.pack as usize] {
            continue;
        }
        for page in r.first..r.end().min(pages) {
            let c = &mut changed[page as usize];
            if !*c {
                *c = true;
                out.pages += 1;
            }
        }
    }
    out.packs = folded.iter().filter(|f| **f).count();
    out
}

/// Which of a snapshot's `packs` a run folds into its own XOR pack, the
/// run itself adding `new` deltas: as [`crate::compaction`] tiers plain
/// packs, a tier is the base-[`FAN_IN`] order of a pack's deltas, and when
/// one holds `FAN_IN` packs every XOR pack of that tier and below is
/// folded. A pack of at least `settled` deltas is left alone. Every delta
/// of a pack stays needed (the page's other deltas cancel nothing), so a
/// fold shrinks only by deltas of one page merging into one.
pub fn fold_xor(packs: &[PackRef], new: u64, settled: u64) -> Vec<usize> {
    let tier = |n: u64| n.max(1).ilog(FAN_IN as u64);
    let small = |p: &PackRef| p.xor && p.pages < settled;
    let mut folded = vec![false; packs.len()];
    let mut new = new;
    loop {
        let mut per_tier = BTreeMap::<u32, usize>::new();
        for (i, p) in packs.iter().enumerate() {
            if small(p) && !folded[i] {
                *per_tier.entry(tier(p.pages)).or_default() += 1;
            }
        }
        if new > 0 && new < settled {
            *per_tier.entry(tier(new)).or_default() += 1;
        }
        let Some((&full, _)) = per_tier.iter().find(|(_, n)| **n >= FAN_IN) else {
            break;
        };
        for (i, p) in packs.iter().enumerate() {
            if small(p) && !folded[i] && tier(p.pages) <= full {
                folded[i] = true;
                new += p.pages;
            }
        }
    }
    (0..packs.len()).filter(|&i| folded[i]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page_map::{Builder, PackRef};
    use proptest::prelude::*;
    use proptest::test_runner::TestRng;

    const PAGE: u64 = 4096;

    /// A chain in memory: which pages each pack holds, as (page, version),
    /// and the newest snapshot's map over them.
    #[derive(Default)]
    struct Chain {
        versions: Vec<u64>,
        packs: Vec<Vec<(u64, u64)>>,
        refs: Vec<usize>,
        runs: Vec<Run>,
        written: u64,
        changed: u64,
        most_refs: usize,
    }

    impl Chain {
        /// One run: `touched` pages get a new version, the image has
        /// `pages` pages; returns what was folded.
        fn run(&mut self, pages: u64, touched: &[u64]) -> Folded {
            let before = self.versions.len();
            self.versions.resize(pages as usize, 0);
            let base = self.refs.is_empty();
            // Pages past the previous image are always stored.
            let mut changed: Vec<bool> = (0..pages as usize).map(|p| base || p >= before).collect();
            for &p in touched {
                if p < pages {
                    self.versions[p as usize] += 1;
                    changed[p as usize] = true;
                }
            }
            self.changed += changed.iter().filter(|c| **c).count() as u64;
            let folded = if base {
                Folded::default()
            } else {
                fold(&self.runs, self.refs.len(), &mut changed, PAGE)
            };
            let mut b = if base {
                Builder::full()
            } else {
                Builder::on(std::mem::take(&mut self.runs), self.refs.len())
            };
            // This run's pages, in packs of PACK_RAW_BYTES as PackWriter
            // closes them.
            let per_pack = PACK_RAW_BYTES / PAGE;
            let mut new: Vec<Vec<(u64, u64)>> = Vec::new();
            for page in 0..pages {
                if changed[page as usize] {
                    if new.last().is_none_or(|p| p.len() as u64 == per_pack) {
                        new.push(Vec::new());
                    }
                    let pack = new.len() - 1;
                    new[pack].push((page, self.versions[page as usize]));
                    b.stored(page, pack as u32, new[pack].len() as u64 - 1);
                    self.written += 1;
                } else {
                    b.unchanged(page);
                }
            }
            let mut ids = self.refs.clone();
            for p in new {
                ids.push(self.packs.len());
                self.packs.push(p);
            }
            let refs: Vec<PackRef> = ids.iter().map(|&id| pack_ref(id)).collect();
            let (runs, kept) = b.finish(refs);
            self.runs = runs.list(pages).unwrap().into_owned();
            self.refs = kept.iter().map(|p| p.pages as usize).collect();
            self.most_refs = self.most_refs.max(self.refs.len());
            folded
        }

        /// Every page of the image resolves to its newest version.
        fn check(&self) {
            let mut next = 0;
            for r in &self.runs {
                assert_eq!(r.first, next);
                let pack = &self.packs[self.refs[r.pack as usize]];
                for k in 0..r.count {
                    let (page, version) = pack[(r.at + k) as usize];
                    assert_eq!(page, r.first + k, "page in its place");
                    assert_eq!(
                        version, self.versions[page as usize],
                        "page {page} is current"
                    );
                }
                next = r.end();
            }
            assert_eq!(next, self.versions.len() as u64);
        }

        /// The bound the module promises: small packs per tier, settled
        /// ones per image.
        fn bound(&self) -> usize {
            let tiers = tier(settled_pages(PAGE) - 1) as usize + 1;
            let settled = (self.versions.len() as u64).div_ceil(settled_pages(PAGE)) as usize;
            tiers * (FAN_IN - 1) + 1 + settled
        }
    }

    /// The pack's id rides in `pages` (the builder only moves refs around).
    fn pack_ref(id: usize) -> PackRef {
        PackRef {
            key: format!("p{id}"),
            size: 0,
            sha256: String::new(),
            pages: id as u64,
            index: String::new(),
            index_sha256: String::new(),
            index_at: 0,
            xor: false,
        }
    }

    #[test]
    fn a_deep_chain_of_small_runs_needs_a_bounded_number_of_packs() {
        // 2,000 runs of 16 random updates over an 8,000-page image: without
        // folding the newest snapshot would need about 1,900 packs.
        let mut rng = TestRng::deterministic_rng(proptest::test_runner::RngAlgorithm::ChaCha);
        let pages = 8_000u64;
        let mut chain = Chain::default();
        chain.run(pages, &[]);
        let mut folds = 0;
        for _ in 0..2_000 {
            let touched: Vec<u64> = (0..16).map(|_| rng.random_range(0..pages)).collect();
            if chain.run(pages, &touched).packs > 0 {
                folds += 1;
            }
            assert!(
                chain.refs.len() <= chain.bound(),
                "{} packs, bound {}",
                chain.refs.len(),
                chain.bound()
            );
        }
        chain.check();
        // Pages stored per page changed, the base excluded: each page is
        // copied about once per tier it climbs.
        let incremental = chain.written - pages;
        let amplification = incremental as f64 / (chain.changed - pages) as f64;
        println!(
            "most packs {}, folds {folds}, amplification {amplification:.2}",
            chain.most_refs
        );
        assert!(folds > 100, "{folds}");
        assert!(amplification < 5.0, "{amplification}");
    }

    #[test]
    fn settled_packs_are_never_folded() {
        // A base of 5 full packs and 30 one-page runs: the base stays.
        let mut chain = Chain::default();
        let pages = 5 * PACK_RAW_BYTES / PAGE;
        chain.run(pages, &[]);
        for i in 0..30 {
            let folded = chain.run(pages, &[i * 7]);
            assert!(folded.pages < settled_pages(PAGE), "{folded:?}");
            for base in 0..5 {
                assert!(chain.refs.contains(&base), "base pack {base} kept");
            }
        }
        chain.check();
        assert!(chain.refs.len() <= chain.bound(), "{:?}", chain.refs);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(if std::env::var_os("CI").is_some() { 16 } else { 64 }))]

        /// Any sequence of runs, growing and shrinking the image: every
        /// page still resolves to its newest version, and the packs stay
        /// within the bound.
        #[test]
        fn folding_keeps_every_page_current(
            runs in prop::collection::vec(
                (1u64..6_000, prop::collection::vec(0u64..6_000, 0..300)),
                1..120,
            )
        ) {
            let mut chain = Chain::default();
            chain.run(3_000, &[]);
            for (pages, touched) in runs {
                chain.run(pages, &touched);
                chain.check();
                prop_assert!(chain.refs.len() <= chain.bound());
            }
        }
    }

    fn xor_pack(pages: u64, xor: bool) -> PackRef {
        PackRef {
            key: format!("p{pages}"),
            size: 0,
            sha256: String::new(),
            pages,
            index: String::new(),
            index_sha256: String::new(),
            index_at: 0,
            xor,
        }
    }

    #[test]
    fn folds_take_full_tiers_of_small_xor_packs_and_never_plain_or_settled_ones() {
        let settled = 1024;
        // Seven one-delta packs and this run's: tier 0 is full.
        let mut packs = vec![xor_pack(5_000, false), xor_pack(2_000, true)];
        packs.extend((0..7).map(|_| xor_pack(1, true)));
        let folded = fold_xor(&packs, 1, settled);
        assert_eq!(folded, (2..9).collect::<Vec<_>>());
        // Six: not yet.
        assert!(fold_xor(&packs[..8], 1, settled).is_empty());
        // A run with nothing new adds no pack to any tier.
        assert!(fold_xor(&packs, 0, settled).is_empty());
        // A full tier 0 folds into tier 1, which then holds eight.
        let mut packs = vec![xor_pack(5_000, false)];
        packs.extend((0..7).map(|_| xor_pack(8, true)));
        packs.extend((0..7).map(|_| xor_pack(1, true)));
        assert_eq!(fold_xor(&packs, 1, settled).len(), 14);
    }
}

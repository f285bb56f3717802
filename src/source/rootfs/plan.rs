//! The chunking plan: which layer each package (or, without a package database, each directory
//! group) goes to. Big packages get a layer of their own, small ones share a layer chosen by a
//! stable hash of their name (so adding or removing a package moves no other), files no package
//! owns go to a last layer. With the previous build's plan (`--from-image`), every package keeps
//! its layer, so a rebuild after one package changed changes only that layer.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// The key of the layer of files no package owns.
pub(crate) const UNOWNED: &str = "unowned";
/// The key of the single layer when only one is allowed.
pub(crate) const ALL: &str = "all";

/// One layer of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedLayer {
    /// Its key: `pkg:<name>` (a package of its own), `bin:<n>` (small packages sharing it),
    /// `unowned`, or `all`.
    pub key: String,
    /// The packages in it, sorted.
    pub packages: Vec<String>,
    /// Bytes of regular-file content in it.
    pub size: u64,
}

/// The plan: layers base first; inspect it, move packages with [`ChunkPlan::move_package`], then
/// build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkPlan {
    /// The layers, base first (the unowned files' layer last).
    pub layers: Vec<PlannedLayer>,
    /// Bytes of each package in the tree.
    pub package_sizes: BTreeMap<String, u64>,
}

impl ChunkPlan {
    /// The layer index of `package`, if it is in the plan.
    pub(crate) fn layer_of(&self, package: &str) -> Option<usize> {
        self.layers
            .iter()
            .position(|l| l.packages.iter().any(|p| p == package))
    }

    /// The index of the layer of files no package owns, if there is one.
    pub(crate) fn unowned_layer(&self) -> Option<usize> {
        self.layers
            .iter()
            .position(|l| l.key == UNOWNED || l.key == ALL)
    }

    /// Moves `package` into layer `to`; a package layer left empty is dropped (the later layers'
    /// indices then shift down by one).
    pub fn move_package(&mut self, package: &str, to: usize) -> Result<()> {
        let from = self.layer_of(package).ok_or_else(|| {
            Error::InvalidInput(format!("package {package:?} is not in the plan"))
        })?;
        if to >= self.layers.len() {
            return Err(Error::InvalidInput(format!(
                "the plan has {} layers: there is no layer {to}",
                self.layers.len()
            )));
        }
        let size = self.package_sizes.get(package).copied().unwrap_or(0);
        self.layers[from].packages.retain(|p| p != package);
        self.layers[from].size = self.layers[from].size.saturating_sub(size);
        self.layers[to].packages.push(package.to_string());
        self.layers[to].packages.sort();
        self.layers[to].size += size;
        if self.layers[from].packages.is_empty()
            && self.layers[from].key != UNOWNED
            && self.layers[from].key != ALL
        {
            self.layers.remove(from);
        }
        Ok(())
    }
}

/// The plan of a previous build: its layers' keys and packages, base first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prior {
    /// (key, packages) per layer.
    pub layers: Vec<(String, Vec<String>)>,
}

/// The history comment of a layer, which [`Prior::from_history`] reads back.
pub(crate) fn history_comment(layer: &PlannedLayer) -> String {
    let mut s = format!("bootc-image chunk {}", layer.key);
    for p in &layer.packages {
        s.push(' ');
        s.push_str(p);
    }
    s
}

impl Prior {
    /// Reads the plan back from an image config's history (the comments [`history_comment`]
    /// wrote); `None` when the image was not built by us.
    pub(crate) fn from_history(config: &serde_json::Value) -> Option<Prior> {
        let mut layers = Vec::new();
        for h in config.get("history")?.as_array()? {
            let comment = h.get("comment").and_then(|c| c.as_str()).unwrap_or("");
            let mut words = comment.strip_prefix("bootc-image chunk ")?.split(' ');
            let key = words.next()?.to_string();
            layers.push((key, words.map(str::to_string).collect()));
        }
        (!layers.is_empty()).then_some(Prior { layers })
    }
}

/// FNV-1a: a stable hash (the same on every machine and release) for small packages' bins.
fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Plans at most `max_layers` layers for `sizes` (package → bytes it holds in the tree) and, when
/// `unowned` bytes or entries exist, a last layer for them.
pub fn plan(
    sizes: &BTreeMap<String, u64>,
    unowned: Option<u64>,
    max_layers: usize,
    prior: Option<&Prior>,
) -> Result<ChunkPlan> {
    if max_layers == 0 {
        return Err(Error::InvalidInput(
            "--max-layers must be at least 1".into(),
        ));
    }
    if max_layers == 1 {
        return Ok(ChunkPlan {
            layers: vec![PlannedLayer {
                key: ALL.into(),
                packages: sizes.keys().cloned().collect(),
                size: sizes.values().sum::<u64>() + unowned.unwrap_or(0),
            }],
            package_sizes: sizes.clone(),
        });
    }
    let budget = max_layers - 1;
    // Biggest first, then by name: the order of own layers and who gets one.
    let mut by_size: Vec<(&String, u64)> = sizes.iter().map(|(k, v)| (k, *v)).collect();
    by_size.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    // A previous single-layer build says nothing about places.
    let prior = prior.filter(|p| p.layers.iter().any(|(k, _)| k != ALL && k != UNOWNED));
    let (key_of, order) = match prior {
        Some(prior) => keys_after(prior, sizes, &by_size, budget, max_layers)?,
        None => fresh_keys(&by_size, budget),
    };
    let mut layers: Vec<PlannedLayer> = order
        .iter()
        .map(|key| PlannedLayer {
            key: key.clone(),
            packages: Vec::new(),
            size: 0,
        })
        .collect();
    let mut unowned_layer = PlannedLayer {
        key: UNOWNED.into(),
        packages: Vec::new(),
        size: unowned.unwrap_or(0),
    };
    for (name, key) in &key_of {
        let size = sizes.get(*name).copied().unwrap_or(0);
        let l = match layers.iter_mut().find(|l| &l.key == key) {
            Some(l) => l,
            None => &mut unowned_layer,
        };
        l.packages.push((*name).to_string());
        l.size += size;
    }
    layers.retain(|l| !l.packages.is_empty());
    if unowned.is_some() || !unowned_layer.packages.is_empty() {
        layers.push(unowned_layer);
    }
    Ok(ChunkPlan {
        layers,
        package_sizes: sizes.clone(),
    })
}

/// Package → layer key, and the keys in layer order, keeping a previous build's places: its
/// packages stay in their layers; new ones get a layer of their own while the budget allows, then
/// go to the previous build's shared layers (or, it had none, any of its layers) by a stable hash.
fn keys_after<'a>(
    prior: &Prior,
    sizes: &'a BTreeMap<String, u64>,
    by_size: &[(&'a String, u64)],
    budget: usize,
    max_layers: usize,
) -> Result<(BTreeMap<&'a str, String>, Vec<String>)> {
    let mut key_of: BTreeMap<&str, String> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let kept = prior
        .layers
        .iter()
        .filter(|(k, _)| k != UNOWNED && k != ALL)
        .count();
    if kept > budget {
        return Err(Error::InvalidInput(format!(
            "the previous build has {} layers and --max-layers allows {max_layers}: raise --max-layers to at least {}, or build without --from-image",
            prior.layers.len(),
            kept + 1
        )));
    }
    for (key, pkgs) in &prior.layers {
        for p in pkgs {
            if let Some((name, _)) = sizes.get_key_value(p)
                && key != UNOWNED
                && key != ALL
            {
                key_of.insert(name.as_str(), key.clone());
            }
        }
        if key != UNOWNED && key != ALL && !order.contains(key) {
            order.push(key.clone());
        }
    }
    let mut bins: Vec<String> = order
        .iter()
        .filter(|k| k.starts_with("bin:"))
        .cloned()
        .collect();
    if bins.is_empty() {
        bins = order.clone();
    }
    for (name, _) in by_size {
        if key_of.contains_key(name.as_str()) {
            continue;
        }
        let used = key_of
            .values()
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        let key = if used < budget {
            format!("pkg:{name}")
        } else if !bins.is_empty() {
            bins[(fnv1a(name) % bins.len() as u64) as usize].clone()
        } else {
            UNOWNED.to_string()
        };
        if key != UNOWNED && !order.contains(&key) {
            order.push(key.clone());
        }
        key_of.insert(name.as_str(), key);
    }
    Ok((key_of, order))
}

/// Package → layer key, and the keys in layer order, for a first build: a layer per package when
/// they fit the budget, else the biggest half of the budget gets layers of their own and the rest
/// share layers by a stable hash of their names.
fn fresh_keys<'a>(
    by_size: &[(&'a String, u64)],
    budget: usize,
) -> (BTreeMap<&'a str, String>, Vec<String>) {
    let mut key_of: BTreeMap<&str, String> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    if by_size.len() <= budget {
        for (name, _) in by_size {
            let key = format!("pkg:{name}");
            order.push(key.clone());
            key_of.insert(name.as_str(), key);
        }
        return (key_of, order);
    }
    let own = budget / 2;
    let bins = (budget - own) as u64;
    for (i, (name, _)) in by_size.iter().enumerate() {
        let key = if i < own {
            let k = format!("pkg:{name}");
            order.push(k.clone());
            k
        } else {
            format!("bin:{:02}", fnv1a(name) % bins)
        };
        key_of.insert(name.as_str(), key);
    }
    let mut bin_keys: Vec<String> = key_of
        .values()
        .filter(|k| k.starts_with("bin:"))
        .cloned()
        .collect();
    bin_keys.sort();
    bin_keys.dedup();
    order.extend(bin_keys);
    (key_of, order)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(n: usize) -> BTreeMap<String, u64> {
        (0..n)
            .map(|i| (format!("p{i:03}"), (i as u64 + 1) * 1000))
            .collect()
    }

    #[test]
    fn few_packages_own_layers() {
        let p = plan(&sizes(3), Some(10), 64, None).expect("plan");
        let keys: Vec<&str> = p.layers.iter().map(|l| l.key.as_str()).collect();
        assert_eq!(keys, ["pkg:p002", "pkg:p001", "pkg:p000", "unowned"]);
    }

    #[test]
    fn many_packages_at_most_max_layers() {
        let p = plan(&sizes(500), Some(10), 16, None).expect("plan");
        assert!(p.layers.len() <= 16, "{}", p.layers.len());
        assert_eq!(p.layers.last().map(|l| l.key.as_str()), Some(UNOWNED));
        let total: usize = p.layers.iter().map(|l| l.packages.len()).sum();
        assert_eq!(total, 500);
    }

    /// The prior a later build reads from `p`'s layers.
    fn prior_of(p: &ChunkPlan) -> Prior {
        Prior {
            layers: p
                .layers
                .iter()
                .map(|l| (l.key.clone(), l.packages.clone()))
                .collect(),
        }
    }

    /// A prior plan keeps every package where it was, a new package finds a place, a removed one
    /// leaves.
    #[test]
    fn prior_keeps_places() {
        let first = plan(&sizes(500), Some(10), 16, None).expect("plan");
        let prior = prior_of(&first);
        let mut s = sizes(500);
        s.remove("p100");
        s.insert("new".into(), 5);
        s.insert("p499".into(), 1);
        let second = plan(&s, Some(10), 16, Some(&prior)).expect("plan");
        for l in &first.layers {
            for p in &l.packages {
                if p != "p100" {
                    assert_eq!(
                        second.layer_of(p),
                        Some(first.layer_of(p).expect("first")),
                        "{p}"
                    );
                }
            }
        }
        assert!(second.layer_of("new").is_some());
        assert!(second.layers.len() <= 16);
    }

    /// A previous build with more layers than allowed is refused; a single-layer one is ignored;
    /// one without shared layers takes overflowing new packages into its layers, not `unowned`.
    #[test]
    fn prior_edges() {
        let first = plan(&sizes(40), Some(10), 64, None).expect("plan");
        let prior = prior_of(&first);
        assert!(plan(&sizes(40), Some(10), 16, Some(&prior)).is_err());
        let all = Prior {
            layers: vec![(ALL.into(), vec!["p000".into()])],
        };
        assert_eq!(
            plan(&sizes(5), None, 8, Some(&all)).expect("plan"),
            plan(&sizes(5), None, 8, None).expect("plan")
        );
        let mut more = sizes(40);
        for i in 0..30 {
            more.insert(format!("new{i}"), 10);
        }
        let second = plan(&more, Some(10), 42, Some(&prior)).expect("plan");
        assert!(second.layers.len() <= 42);
        let unowned = second.unowned_layer().expect("unowned layer");
        assert!(
            second.layers[unowned].packages.is_empty(),
            "{:?}",
            second.layers[unowned]
        );
    }
}

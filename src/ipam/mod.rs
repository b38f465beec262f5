//! The address plan: which /26 blocks of the pool are free, reserved or taken, and the next free one.
//!
//! Pure and synchronous. The Kubernetes side (NetworkAllocation objects, whose names are the lock) lives in the
//! PrivateNetwork controller; this module only answers "is this block usable?" and "which block next?".
//! One bit per /26: the default pool (10/8, 172.16/12, 192.168/16) is 279,552 blocks, 34 KiB of bitmap.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Prefix length of every customer network.
pub const BLOCK_PREFIX: u8 = 26;
const BLOCK_SIZE: u32 = 1 << (32 - BLOCK_PREFIX);

/// The private ranges customer networks come from, and the platform's own ranges they must avoid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    pub ranges: Vec<Ipv4Net>,
    pub reserved: Vec<Ipv4Net>,
}

impl Default for PoolConfig {
    /// The RFC 1918 ranges, minus kind's default pod (10.244.0.0/16) and service (10.96.0.0/12) ranges.
    fn default() -> Self {
        let net = |s: &str| s.parse().expect("valid constant");
        PoolConfig {
            ranges: vec![net("10.0.0.0/8"), net("172.16.0.0/12"), net("192.168.0.0/16")],
            reserved: vec![net("10.244.0.0/16"), net("10.96.0.0/12")],
        }
    }
}

/// Why a pool configuration is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("pool range {0} is smaller than a /26")]
    RangeTooSmall(Ipv4Net),
    #[error("pool range {0} is not written in canonical form (did you mean {1}?)")]
    NotCanonical(Ipv4Net, Ipv4Net),
    #[error("pool ranges {0} and {1} overlap")]
    Overlap(Ipv4Net, Ipv4Net),
    #[error("the pool is empty")]
    Empty,
}

/// Why a block cannot be used for a network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("{0} is not a /26")]
    NotA26(String),
    #[error("{0} does not start on a /26 boundary (did you mean {1}?)")]
    NotAligned(String, Ipv4Net),
    #[error("{0} is not an IPv4 CIDR")]
    Unparsable(String),
    #[error("{block} lies outside the operator's address pool ({pool})")]
    OutsidePool { block: Ipv4Net, pool: String },
    #[error("{block} overlaps {reserved}, which the platform reserves for its own use")]
    Reserved { block: Ipv4Net, reserved: Ipv4Net },
}

/// Parses a /26 block written as in `PrivateNetwork.spec.cidr`.
pub fn parse_block(text: &str) -> Result<Ipv4Net, BlockError> {
    let net: Ipv4Net = text
        .trim()
        .parse()
        .map_err(|_| BlockError::Unparsable(text.to_owned()))?;
    if net.prefix_len() != BLOCK_PREFIX {
        return Err(BlockError::NotA26(text.to_owned()));
    }
    if net.trunc() != net {
        return Err(BlockError::NotAligned(text.to_owned(), net.trunc()));
    }
    Ok(net)
}

/// The address that answers pings through the tunnels: the first host of the block (`.1` of `x.y.z.0/26`).
pub fn pinghost(block: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(block.network()) + 1)
}

/// Usage of one pool range, in /26 blocks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeUsage {
    pub range: Ipv4Net,
    pub total: u32,
    pub reserved: u32,
    pub used: u32,
    pub free: u32,
}

#[derive(Clone, Debug)]
struct RangeBitmap {
    range: Ipv4Net,
    blocks: u32,
    /// Bit set: the block overlaps a reserved range.
    reserved: Vec<u64>,
    /// Bit set: the block is allocated (or cooling down after release).
    taken: Vec<u64>,
    reserved_count: u32,
    taken_count: u32,
}

impl RangeBitmap {
    fn index_of(&self, block: Ipv4Net) -> Option<usize> {
        if !self.range.contains(&block) {
            return None;
        }
        Some(((u32::from(block.network()) - u32::from(self.range.network())) / BLOCK_SIZE) as usize)
    }

    fn block_at(&self, index: usize) -> Ipv4Net {
        let addr = u32::from(self.range.network()) + index as u32 * BLOCK_SIZE;
        Ipv4Net::new(Ipv4Addr::from(addr), BLOCK_PREFIX).expect("prefix 26 is valid")
    }

    fn first_free(&self) -> Option<usize> {
        for (word_index, (taken, reserved)) in self.taken.iter().zip(&self.reserved).enumerate() {
            let unavailable = taken | reserved;
            if unavailable != u64::MAX {
                let index = word_index * 64 + (!unavailable).trailing_zeros() as usize;
                return (index < self.blocks as usize).then_some(index);
            }
        }
        None
    }
}

fn bit(words: &[u64], index: usize) -> bool {
    words[index / 64] & (1 << (index % 64)) != 0
}

fn set_bit(words: &mut [u64], index: usize, value: bool) {
    if value {
        words[index / 64] |= 1 << (index % 64);
    } else {
        words[index / 64] &= !(1 << (index % 64));
    }
}

/// Free, reserved and taken /26 blocks of the pool.
#[derive(Clone, Debug)]
pub struct AddressPlan {
    ranges: Vec<RangeBitmap>,
    reserved: Vec<Ipv4Net>,
}

impl AddressPlan {
    pub fn new(config: &PoolConfig) -> Result<Self, PlanError> {
        if config.ranges.is_empty() {
            return Err(PlanError::Empty);
        }
        for (i, a) in config.ranges.iter().enumerate() {
            if a.prefix_len() > BLOCK_PREFIX {
                return Err(PlanError::RangeTooSmall(*a));
            }
            if a.trunc() != *a {
                return Err(PlanError::NotCanonical(*a, a.trunc()));
            }
            if let Some(b) = config.ranges[..i].iter().find(|b| b.contains(a) || a.contains(*b)) {
                return Err(PlanError::Overlap(*b, *a));
            }
        }
        let ranges = config
            .ranges
            .iter()
            .map(|range| {
                let blocks = 1u32 << (BLOCK_PREFIX - range.prefix_len());
                let words = (blocks as usize).div_ceil(64);
                let mut bitmap = RangeBitmap {
                    range: *range,
                    blocks,
                    reserved: vec![0; words],
                    taken: vec![0; words],
                    reserved_count: 0,
                    taken_count: 0,
                };
                // Bits past the end of a range smaller than 64 blocks count as reserved, never as free.
                for index in blocks as usize..words * 64 {
                    set_bit(&mut bitmap.reserved, index, true);
                }
                for reserved in &config.reserved {
                    let overlap_start = u32::from(range.network()).max(u32::from(reserved.network()));
                    let overlap_end = u32::from(range.broadcast()).min(u32::from(reserved.broadcast()));
                    if overlap_start > overlap_end {
                        continue;
                    }
                    let base = u32::from(range.network());
                    for index in ((overlap_start - base) / BLOCK_SIZE)..=((overlap_end - base) / BLOCK_SIZE) {
                        if !bit(&bitmap.reserved, index as usize) {
                            set_bit(&mut bitmap.reserved, index as usize, true);
                            bitmap.reserved_count += 1;
                        }
                    }
                }
                bitmap
            })
            .collect();
        Ok(AddressPlan {
            ranges,
            reserved: config.reserved.clone(),
        })
    }

    fn locate(&self, block: Ipv4Net) -> Option<(usize, usize)> {
        self.ranges
            .iter()
            .enumerate()
            .find_map(|(r, bitmap)| bitmap.index_of(block).map(|i| (r, i)))
    }

    /// Whether `block` may be given to a network at all (ignoring whether it is taken).
    pub fn check(&self, block: Ipv4Net) -> Result<(), BlockError> {
        let Some((r, i)) = self.locate(block) else {
            let pool = self
                .ranges
                .iter()
                .map(|b| b.range.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(BlockError::OutsidePool { block, pool });
        };
        if bit(&self.ranges[r].reserved, i) {
            let reserved = self
                .reserved
                .iter()
                .find(|res| res.contains(&block.network()) || block.contains(*res) || res.contains(&block.broadcast()))
                .copied()
                .unwrap_or(block);
            return Err(BlockError::Reserved { block, reserved });
        }
        Ok(())
    }

    /// Marks `block` taken; false when it is outside the pool (it is then simply not tracked).
    pub fn mark_taken(&mut self, block: Ipv4Net) -> bool {
        let Some((r, i)) = self.locate(block) else {
            return false;
        };
        let bitmap = &mut self.ranges[r];
        if !bit(&bitmap.taken, i) {
            set_bit(&mut bitmap.taken, i, true);
            bitmap.taken_count += 1;
        }
        true
    }

    /// Marks `block` free again.
    pub fn mark_free(&mut self, block: Ipv4Net) {
        if let Some((r, i)) = self.locate(block) {
            let bitmap = &mut self.ranges[r];
            if bit(&bitmap.taken, i) {
                set_bit(&mut bitmap.taken, i, false);
                bitmap.taken_count -= 1;
            }
        }
    }

    pub fn is_taken(&self, block: Ipv4Net) -> bool {
        self.locate(block).is_some_and(|(r, i)| bit(&self.ranges[r].taken, i))
    }

    /// The block automatic assignment picks next: the lowest free, non-reserved block, pool ranges in order.
    pub fn next_free(&self) -> Option<Ipv4Net> {
        self.ranges
            .iter()
            .find_map(|bitmap| bitmap.first_free().map(|i| bitmap.block_at(i)))
    }

    /// Usage per pool range.
    pub fn usage(&self) -> Vec<RangeUsage> {
        self.ranges
            .iter()
            .map(|b| {
                // A taken block inside a reserved range (allocated before the range was reserved) counts as used.
                let taken_and_reserved: u32 = b.taken.iter().zip(&b.reserved).map(|(t, r)| (t & r).count_ones()).sum();
                let used = b.taken_count;
                RangeUsage {
                    range: b.range,
                    total: b.blocks,
                    reserved: b.reserved_count,
                    used,
                    free: b.blocks - b.reserved_count - (used - taken_and_reserved),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn plan(ranges: &[&str], reserved: &[&str]) -> AddressPlan {
        AddressPlan::new(&PoolConfig {
            ranges: ranges.iter().map(|s| net(s)).collect(),
            reserved: reserved.iter().map(|s| net(s)).collect(),
        })
        .unwrap()
    }

    #[test]
    fn parse_block_rules() {
        assert_eq!(parse_block("10.20.30.64/26"), Ok(net("10.20.30.64/26")));
        assert_eq!(
            parse_block("10.20.30.0/24"),
            Err(BlockError::NotA26("10.20.30.0/24".into()))
        );
        assert_eq!(
            parse_block("10.20.30.65/26"),
            Err(BlockError::NotAligned("10.20.30.65/26".into(), net("10.20.30.64/26")))
        );
        assert_eq!(parse_block("nonsense"), Err(BlockError::Unparsable("nonsense".into())));
    }

    #[test]
    fn pinghost_is_first_host() {
        assert_eq!(pinghost(net("10.20.30.64/26")), Ipv4Addr::new(10, 20, 30, 65));
    }

    #[test]
    fn next_free_is_lowest_in_pool_order_and_skips_reserved_and_taken() {
        let mut p = plan(&["10.0.0.0/24", "192.168.0.0/26"], &["10.0.0.0/26"]);
        assert_eq!(p.next_free(), Some(net("10.0.0.64/26")));
        p.mark_taken(net("10.0.0.64/26"));
        p.mark_taken(net("10.0.0.128/26"));
        assert_eq!(p.next_free(), Some(net("10.0.0.192/26")));
        p.mark_taken(net("10.0.0.192/26"));
        assert_eq!(p.next_free(), Some(net("192.168.0.0/26")));
        p.mark_taken(net("192.168.0.0/26"));
        assert_eq!(p.next_free(), None, "pool exhausted");
        p.mark_free(net("10.0.0.128/26"));
        assert_eq!(p.next_free(), Some(net("10.0.0.128/26")));
    }

    #[test]
    fn reserved_ranges_larger_or_smaller_than_a_block() {
        // A /28 inside a block reserves the whole block; a /16 reserves 1,024 blocks.
        let p = plan(&["10.0.0.0/8"], &["10.0.0.16/28", "10.1.0.0/16"]);
        assert_eq!(p.next_free(), Some(net("10.0.0.64/26")));
        assert_eq!(
            p.check(net("10.0.0.0/26")),
            Err(BlockError::Reserved {
                block: net("10.0.0.0/26"),
                reserved: net("10.0.0.16/28")
            })
        );
        assert_eq!(
            p.check(net("10.1.2.0/26")),
            Err(BlockError::Reserved {
                block: net("10.1.2.0/26"),
                reserved: net("10.1.0.0/16")
            })
        );
        assert_eq!(p.usage()[0].reserved, 1 + 1024);
    }

    #[test]
    fn check_reports_outside_pool() {
        let p = plan(&["10.0.0.0/8"], &[]);
        assert_eq!(
            p.check(net("192.168.0.0/26")),
            Err(BlockError::OutsidePool {
                block: net("192.168.0.0/26"),
                pool: "10.0.0.0/8".into()
            })
        );
        assert_eq!(p.check(net("10.9.9.0/26")), Ok(()));
    }

    #[test]
    fn usage_counts_blocks() {
        let mut p = plan(&["10.0.0.0/24", "192.168.0.0/16"], &["10.0.0.0/26"]);
        p.mark_taken(net("10.0.0.64/26"));
        p.mark_taken(net("10.0.0.64/26"));
        assert!(!p.mark_taken(net("172.16.0.0/26")));
        let u = p.usage();
        assert_eq!(
            u[0],
            RangeUsage {
                range: net("10.0.0.0/24"),
                total: 4,
                reserved: 1,
                used: 1,
                free: 2
            }
        );
        assert_eq!(
            u[1],
            RangeUsage {
                range: net("192.168.0.0/16"),
                total: 1024,
                reserved: 0,
                used: 0,
                free: 1024
            }
        );
    }

    #[test]
    fn default_pool_has_the_documented_size() {
        let p = AddressPlan::new(&PoolConfig::default()).unwrap();
        let total: u32 = p.usage().iter().map(|u| u.total).sum();
        assert_eq!(total, 262_144 + 16_384 + 1_024);
        // kind's pod and service ranges are not handed out.
        assert!(p.check(net("10.244.1.0/26")).is_err());
        assert!(p.check(net("10.100.0.0/26")).is_err());
        assert_eq!(p.next_free(), Some(net("10.0.0.0/26")));
    }

    #[test]
    fn invalid_pools_are_refused() {
        let cfg = |r: &[&str]| PoolConfig {
            ranges: r.iter().map(|s| net(s)).collect(),
            reserved: vec![],
        };
        assert_eq!(AddressPlan::new(&cfg(&[])).unwrap_err(), PlanError::Empty);
        assert_eq!(
            AddressPlan::new(&cfg(&["10.0.0.0/27"])).unwrap_err(),
            PlanError::RangeTooSmall(net("10.0.0.0/27"))
        );
        assert_eq!(
            AddressPlan::new(&cfg(&["10.0.0.1/24"])).unwrap_err(),
            PlanError::NotCanonical(net("10.0.0.1/24"), net("10.0.0.0/24"))
        );
        assert_eq!(
            AddressPlan::new(&cfg(&["10.0.0.0/8", "10.1.0.0/16"])).unwrap_err(),
            PlanError::Overlap(net("10.0.0.0/8"), net("10.1.0.0/16"))
        );
    }

    #[test]
    fn exhausting_a_small_range_block_by_block_never_repeats() {
        let mut p = plan(&["172.16.0.0/20"], &[]);
        let mut seen = std::collections::BTreeSet::new();
        while let Some(block) = p.next_free() {
            assert!(seen.insert(block), "{block} handed out twice");
            p.mark_taken(block);
        }
        assert_eq!(seen.len(), 64);
    }
}

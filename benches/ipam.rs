//! Address plan speed and memory: `cargo bench --bench ipam`.
//! Goal (issue 4): finding a free /26 takes at most 1 ms with 100,000 ranges allocated.

use std::{hint::black_box, time::Instant};

use appdb_operator::ipam::{AddressPlan, PoolConfig};
use ipnet::Ipv4Net;

const ALLOCATED: usize = 100_000;

fn block(index: u32) -> Ipv4Net {
    Ipv4Net::new(
        std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(10, 0, 0, 0)) + index * 64),
        26,
    )
    .unwrap()
}

fn time_per_call(iterations: u32, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    start.elapsed().as_secs_f64() / f64::from(iterations)
}

fn main() {
    let config = PoolConfig::default();
    let mut plan = AddressPlan::new(&config).expect("default pool");
    let build = time_per_call(100, || {
        black_box(AddressPlan::new(&config).unwrap());
    });

    // Worst case for the search: the first 100,000 blocks taken, so it scans past all of them.
    let mark_start = Instant::now();
    let mut taken = 0u32;
    let mut index = 0u32;
    while (taken as usize) < ALLOCATED {
        let b = block(index);
        if plan.check(b).is_ok() {
            plan.mark_taken(b);
            taken += 1;
        }
        index += 1;
    }
    let mark = mark_start.elapsed().as_secs_f64() / ALLOCATED as f64;
    let next_dense = time_per_call(10_000, || {
        black_box(plan.next_free());
    });

    // Scattered: every other block taken across the 10/8 range.
    let mut scattered = AddressPlan::new(&config).unwrap();
    for i in (0..ALLOCATED as u32 * 2).step_by(2) {
        scattered.mark_taken(block(i));
    }
    let next_scattered = time_per_call(10_000, || {
        black_box(scattered.next_free());
    });
    let snapshot = time_per_call(1_000, || {
        black_box(plan.clone());
    });
    let total_blocks: u32 = plan.usage().iter().map(|u| u.total).sum();
    // Two bitmaps (reserved, taken) of one bit per block.
    let bitmap_bytes = 2 * total_blocks.div_ceil(64) * 8;

    println!("address plan, default pool ({total_blocks} blocks), {ALLOCATED} ranges allocated");
    println!(
        "  next_free, first {ALLOCATED} blocks taken: {:>8.2} µs",
        next_dense * 1e6
    );
    println!(
        "  next_free, every other block taken:      {:>8.2} µs",
        next_scattered * 1e6
    );
    println!("  mark_taken:                              {:>8.3} µs", mark * 1e6);
    println!("  build the plan from the pool:            {:>8.2} µs", build * 1e6);
    println!("  snapshot (clone) for one reconcile:      {:>8.2} µs", snapshot * 1e6);
    println!(
        "  memory: {bitmap_bytes} bytes of bitmap ({:.1} KiB)",
        f64::from(bitmap_bytes) / 1024.0
    );
    assert!(plan.next_free().is_some());
}

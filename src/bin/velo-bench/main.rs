//! `velo-bench`: velostream's benchmark tool. `generate` writes deterministic input files.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Benchmark tooling for velostream.
#[derive(Parser, Debug)]
#[command(name = "velo-bench", version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write a deterministic trades file (symbol, price, quantity, ts).
    Generate {
        /// Number of rows.
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        /// Number of distinct symbols.
        #[arg(long, default_value_t = 1000)]
        keys: u64,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Csv)]
        format: Format,
        /// Random seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Output file.
        #[arg(long)]
        output: PathBuf,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
enum Format {
    Csv,
    Jsonl,
}

/// A small, fast deterministic generator (SplitMix64).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn generate(
    rows: u64,
    keys: u64,
    format: Format,
    seed: u64,
    output: &PathBuf,
) -> std::io::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(output)?);
    let mut rng = SplitMix(seed);
    // 2024-01-01T00:00:00Z, ~1000 trades per second, up to 2s out of order.
    let start = 1_704_067_200_000i64;
    if format == Format::Csv {
        writeln!(out, "symbol,price,quantity,ts")?;
    }
    for i in 0..rows {
        let symbol = rng.next() % keys.max(1);
        let cents = 1_000 + rng.next() % 49_000;
        let quantity = 1 + rng.next() % 1000;
        let jitter = (rng.next() % 2000) as i64;
        let ts = start + i as i64 - jitter;
        let (whole, frac) = (cents / 100, cents % 100);
        match format {
            Format::Csv => writeln!(out, "SYM{symbol:04},{whole}.{frac:02},{quantity},{ts}")?,
            Format::Jsonl => writeln!(
                out,
                r#"{{"symbol":"SYM{symbol:04}","price":{whole}.{frac:02},"quantity":{quantity},"ts":{ts}}}"#
            )?,
        }
    }
    out.flush()
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match &args.command {
        Command::Generate {
            rows,
            keys,
            format,
            seed,
            output,
        } => generate(*rows, *keys, *format, *seed, output),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

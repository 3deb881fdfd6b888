//! `thicket-operator`: see the crate documentation.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    thicket_operator::run::main(thicket_operator::run::Args::parse())
}

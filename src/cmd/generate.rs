//! `riskbatch gen`: synthetic participants with planted fraud rings.

use anyhow::Result;

use crate::cli::GenArgs;
use crate::exit::Exit;

pub fn execute(args: GenArgs) -> Result<Exit> {
    crate::generator::generate(args.rows, &args.out, args.seed)?;
    println!("wrote {} participants to {}", args.rows, args.out.display());
    Ok(Exit::Complete)
}

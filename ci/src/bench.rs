//! `cargo xtask bench`: one line per figure, `bench <name> <value> <unit>`.

use crate::{examples, image};

/// Prints every benchmark figure.
pub fn run() -> Result<(), String> {
    for example in examples() {
        let elf = image::build(&example)?;
        println!(
            "bench image.{example} {} bytes",
            image::stripped_size(&elf)?
        );
    }
    Ok(())
}

//! `fanout replay FILE --to ADDR`: recorded clients against a live server.

use crate::cli::ReplayArgs;
use crate::error::Error;

/// Plays the capture's sessions against `--to`.
pub fn run(_args: &ReplayArgs) -> Result<(), Error> {
    Err(Error::Runtime("not yet".into()))
}

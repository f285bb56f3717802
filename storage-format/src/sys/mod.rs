//! Everything in this crate that touches the system: fcntl lock files and their tokens, loading
//! `storage.conf` (the environment, the files), the clock and the random source. The other
//! modules are pure: bytes and values in, bytes and values out — what the fuzz targets exercise.

pub mod clock;
pub mod conf_files;
pub mod lockfile;
pub(crate) mod random;
pub mod seen_paths;
pub mod sorted_hashes;

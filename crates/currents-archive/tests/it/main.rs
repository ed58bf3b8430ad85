//! Integration tests of currents-archive: one archive scenario on a local
//! directory and on a real S3 API (moto's server).

mod local;
mod s3;
mod scenario;

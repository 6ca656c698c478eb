//! Integration tests of `todo-sidecar`: one binary, the real executable,
//! a real PostgreSQL (a fresh database per test) and a real S3 server (moto).

mod aggregate;
mod aggregate_remote_write;
mod backups;
mod faults;
mod helpers;
mod interrupted;
mod logship;
mod logship_receiver;
mod logship_tailer;
mod s3;
mod skeleton;

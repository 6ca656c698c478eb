//! `todo-sidecar`: placeholder until the backup work lands.

fn main() {}

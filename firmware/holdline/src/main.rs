//! `holdline`: the appliance daemon and its console client.
fn main() {}

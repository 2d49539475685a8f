//! Update agent: bundle verification, A/B slots, trial boot and bootloader back-ends.

//! Critical-task check-ins and the policy that feeds the hardware watchdog only while all are fresh.

//! SQLite store: bindings, subscriptions, MWI, event log, quarantine.

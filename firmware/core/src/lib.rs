//! The appliance's edge-proxy brain: routing between LAN phones and the WAN cloud; sans-IO.

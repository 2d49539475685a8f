//! Test rig: real Kamailio as the cloud, SIPp and baresip as phones, the built holdline binary.

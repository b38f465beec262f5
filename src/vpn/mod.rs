//! Site-to-site VPN domain logic (pure): pre-shared keys, validation of the customer's side, the canonical
//! connection model, and every configuration rendered from it (the gateway's strongSwan files and the customer's
//! device downloads). The controller that runs gateway pods builds on this.

pub mod forward;
pub mod model;
pub mod psk;
pub mod render;
pub mod state;
pub mod validate;

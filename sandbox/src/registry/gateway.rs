//! Where nodes find the registries: the ports on their gateway and the names that lead there.

/// The session registry's port on the gateway, where `registry:PUSH_PORT/<name>` goes.
pub const PUSH_PORT: u16 = 5000;
/// The mirror's port on the gateway (each node's dockerd knows it; users need not).
pub const MIRROR_PORT: u16 = 5001;
/// The name of the session registry inside the nodes (DNS and `/etc/hosts`).
pub const REGISTRY_HOST: &str = "registry";
/// Docker Hub's registry, which the offline stand-in answers for.
pub(crate) const HUB_HOST: &str = "registry-1.docker.io";
pub(crate) const HUB_PORT: u16 = 443;

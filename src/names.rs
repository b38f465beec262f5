//! Every name the operator writes into the cluster: field manager, finalizers, labels and annotations.
//! Platform engineers select on these (`kubectl get -l appdb.dev/role=database`), so they are API.

/// The one field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "appdb-operator";

/// Finalizer on a PrivateNetwork: its range is released (cool-down) before the network disappears.
pub const FINALIZER_RELEASE_RANGE: &str = "appdb.dev/release-range";

/// What a pod is, for the customer isolation policies. Session pods of a customer must carry
/// `appdb.dev/role: session` in the customer's namespace.
pub const LABEL_ROLE: &str = "appdb.dev/role";
pub const ROLE_SESSION: &str = "session";
pub const ROLE_DATABASE: &str = "database";
pub const ROLE_VPN_GATEWAY: &str = "vpn-gateway";
pub const ROLE_OPERATOR_JOB: &str = "operator-job";

/// `app.kubernetes.io/managed-by` value on everything the operator creates.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "appdb-operator";

/// On a NetworkAllocation: which PrivateNetwork holds it (namespace, name, UID), so that lookups by holder are
/// label-selected list calls against the API server, not cache reads.
pub const LABEL_NETWORK_NAMESPACE: &str = "appdb.dev/network-namespace";
pub const LABEL_NETWORK_NAME: &str = "appdb.dev/network-name";
pub const LABEL_NETWORK_UID: &str = "appdb.dev/network-uid";
/// On a NetworkAllocation whose network is gone: when it was released (RFC 3339). The range stays locked until the
/// cool-down has passed, because customer firewalls may still point at it.
pub const ANNOTATION_RELEASED_AT: &str = "appdb.dev/released-at";

/// On a database's pods and objects: the AppDatabase they belong to.
pub const LABEL_DATABASE: &str = "appdb.dev/database";
/// On VPN gateway pods: the PrivateNetwork they serve. Only the gateways of a database's current network may reach it.
pub const LABEL_NETWORK: &str = "appdb.dev/network";
/// On a database's pods: which StatefulSet generation serves them; the stable Service selects on it.
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
/// On a password rotation Job: the admin Secret `resourceVersion` it rotates to.
pub const ANNOTATION_SECRET_REVISION: &str = "appdb.dev/secret-revision";
/// Finalizer on an AppDatabase: its data volume is kept or deleted as `spec.deletionPolicy` says, deliberately.
pub const FINALIZER_DATABASE_CLEANUP: &str = "appdb.dev/database-cleanup";

/// On VPN gateway pods and Services: the VpnConnection and the tunnel (1 or 2) they serve.
pub const LABEL_VPN: &str = "appdb.dev/vpn";
pub const LABEL_TUNNEL: &str = "appdb.dev/tunnel";
/// On a gateway pod template: digest of its configuration, so that a change rolls the pod.
pub const ANNOTATION_CONFIG_DIGEST: &str = "appdb.dev/config-digest";

/// On a Namespace, set by the platform: the DNS domains (comma-separated) its AppDatabases may publish names under.
/// Replaces the operator's `--dns-domains` for that namespace.
pub const ANNOTATION_DNS_DOMAINS: &str = "appdb.dev/dns-domains";

/// Longest AppDatabase name: its StatefulSet is named after it, and a StatefulSet's name must leave room for the
/// `controller-revision-hash` label value (`<name>-<10 characters>`, at most 63). Services named after it must also
/// start with a letter (RFC 1035). The CRD's admission rule says the same.
pub const MAX_DATABASE_NAME: usize = 52;
/// Longest VpnConnection name: `<name>-tunnel<n>-gateway` must fit in 63 characters.
pub const MAX_VPN_NAME: usize = 47;
/// Longest DatabaseMigration name: `<name>-rollback` (its Job) must fit in 63 characters, without truncation that
/// would give the copy and the rollback Job one name.
pub const MAX_MIGRATION_NAME: usize = 54;
/// Longest PrivateNetwork name: it is a label value on the objects that belong to the network.
pub const MAX_NETWORK_NAME: usize = 63;

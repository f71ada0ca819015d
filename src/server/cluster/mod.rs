//! Serving a cluster over a bucket (`chainlog serve --bucket`, cargo
//! feature `s3`): each workspace held by one node, failover, forwarding to
//! the holder, and read-only replicas (docs/CLUSTER.md, "Serving a cluster").
//! Uses [`crate::cluster`] (the replicated log, the follower, the lease and
//! the probe), [`crate::archive`] (the bucket) and the server's workspaces.
//!
//! Under `s3://BUCKET/PREFIX`:
//!
//! | key | what |
//! |---|---|
//! | `PREFIX/ws/<workspace>/` | one workspace: its lease, head, pieces and archived segments ([`crate::cluster`]) |
//! | `PREFIX/nodes/<node id>.json` | a writer node's address, renewed every third of the lease TTL ([`nodes`]) |
//!
//! A request for workspace `W` on a writer node: held here, served; `W`'s
//! lease live at another node, forwarded there ([`forward`]); no live
//! lease, taken here when this node is `W`'s preferred holder among the
//! live nodes ([`placement`]), else forwarded to the preferred node, which
//! takes it. A loop (`holding.rs`) renews this node's record, takes over the
//! workspaces whose lease expired and that prefer this node, and lets go of
//! those whose writer was fenced.

pub mod forward;
pub(crate) mod holding;
pub mod nodes;
pub mod placement;
pub(crate) mod routing;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::archive::{ArchiveTarget, Bucket};
use crate::cluster::{
    probe_conditional_writes, read_lease, ClusterError, FollowOptions, Follower, LeaseOptions,
    Replicated, ReplicationOptions, HEAD_OBJECT, LEASE_OBJECT,
};
use crate::format::segment::{MAX_SEGMENT_BYTES, MIN_SEGMENT_BYTES};
use crate::hash::checkpoint::{NoteSigner, NoteVerifier};
use crate::log::{Log, Options};
use crate::server::commit::{NotReplicated, Replication};
use crate::server::AppState;

use self::nodes::{validate_node_id, NodeIdError, Nodes};

/// The folder of workspaces under the cluster's prefix.
pub const WORKSPACES_PREFIX: &str = "ws";
/// How long a forwarding decision is reused before the lease is read again.
const ROUTE_CACHE: Duration = Duration::from_secs(1);

/// How a server serves from a bucket.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `s3://BUCKET/PREFIX`, with its endpoint and region.
    pub target: ArchiveTarget,
    /// A writer node, or a read-only replica.
    pub role: Role,
}

/// What a node of the cluster does.
#[derive(Debug, Clone)]
pub enum Role {
    /// Holds workspaces under leases, appends, forwards.
    Writer(WriterConfig),
    /// Serves every workspace read-only from the bucket.
    ReadOnly(ReadOnlyConfig),
}

/// A writer node.
#[derive(Clone)]
pub struct WriterConfig {
    /// This node's id: its lease holder name and its record's name.
    pub node_id: String,
    /// Where the other nodes reach this one: `http://HOST:PORT`.
    pub advertise: String,
    /// Signs the published heads (the log's checkpoint key).
    pub signer: NoteSigner,
    /// The lease TTL (with a skew margin of a fifth of it).
    pub lease_ttl: Duration,
    /// The size of the segments the workspaces' logs create.
    pub segment_bytes: u64,
    /// Upload interval, acknowledgement timeout, checkpoint origin.
    pub replication: ReplicationOptions,
}

impl std::fmt::Debug for WriterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterConfig")
            .field("node_id", &self.node_id)
            .field("advertise", &self.advertise)
            .field("lease_ttl", &self.lease_ttl)
            .field("segment_bytes", &self.segment_bytes)
            .field("replication", &self.replication)
            .finish_non_exhaustive()
    }
}

/// A read-only replica.
#[derive(Debug, Clone)]
pub struct ReadOnlyConfig {
    /// The verifier key of the logs' checkpoint key: heads are checked with it.
    pub verifier: NoteVerifier,
    /// How often the head is polled, and the cache bound.
    pub follow: FollowOptions,
}

/// Why a server cannot serve from the bucket.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The bucket is unreachable, or does not enforce conditional writes.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The node id cannot name a node.
    #[error(transparent)]
    NodeId(#[from] NodeIdError),
    /// The advertised address is not `http(s)://HOST:PORT`.
    #[error("--advertise {0:?}: expected http://HOST:PORT (or https://), where the other nodes reach this one")]
    Advertise(String),
    /// The lease TTL is too short.
    #[error("--lease-ttl {0:?}: at least 1 s")]
    LeaseTtl(Duration),
    /// The segment size is not one a log can have.
    #[error(
        "--segment-bytes {0}: a multiple of 8 between {MIN_SEGMENT_BYTES} and {MAX_SEGMENT_BYTES}"
    )]
    SegmentBytes(u64),
}

/// A workspace a cluster node serves: its replicated writer, or its follower.
#[derive(Clone)]
pub(crate) enum Held {
    /// Held under this node's lease.
    Writer(Arc<Replicated>),
    /// Followed read-only.
    Reader(Arc<Follower>),
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Held::Writer(r) => write!(f, "Writer(epoch {})", r.epoch()),
            Held::Reader(_) => f.write_str("Reader"),
        }
    }
}

/// A workspace opened from the bucket.
pub(crate) struct Opened {
    pub(crate) log: Arc<Log>,
    pub(crate) held: Held,
    pub(crate) replication: Option<Arc<dyn Replication>>,
}

/// Waits for a [`Replicated`] log's records to be in the bucket.
struct ReplicaAck(Arc<Replicated>);

impl Replication for ReplicaAck {
    fn wait(&self, next_seq: u64) -> Result<(), NotReplicated> {
        match self.0.wait_replicated(next_seq) {
            Ok(()) => Ok(()),
            Err(e @ (ClusterError::LeaseLost { .. } | ClusterError::StaleEpoch { .. })) => {
                Err(NotReplicated::Fenced(e.to_string()))
            }
            Err(e) => Err(NotReplicated::Timeout(e.to_string())),
        }
    }
}

/// Where a request for a workspace goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// This node holds it, or should take it.
    Here,
    /// To another node: the holder of a live lease (`held`), or the
    /// preferred node of a workspace nobody holds.
    Forward {
        node: String,
        url: String,
        held: bool,
    },
}

/// The connections a cluster node keeps: dropped on a thread of their own,
/// since a bucket's runtime cannot be dropped inside the server's.
struct Remote {
    root: Arc<Bucket>,
    nodes: Option<Nodes>,
    buckets: Mutex<HashMap<String, Arc<Bucket>>>,
}

/// A server's place in a cluster.
pub struct Cluster {
    target: ArchiveTarget,
    role: Role,
    lease: LeaseOptions,
    remote: Option<Remote>,
    routes: Mutex<HashMap<String, (Route, Instant)>>,
    pub(crate) http: reqwest::Client,
    /// When a failed forward was last reported, and how many since.
    forward_failures: Mutex<(Option<Instant>, u64)>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("target", &self.target.to_string())
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(remote) = self.remote.take() {
            let _ = std::thread::spawn(move || drop(remote)).join();
        }
    }
}

/// The lease options of a TTL: a skew margin of a fifth of it.
pub fn lease_options(ttl: Duration) -> LeaseOptions {
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    LeaseOptions {
        ttl_ms,
        skew_margin_ms: ttl_ms / 5,
        ..LeaseOptions::default()
    }
}

/// Connects to the bucket; a writer node checks that it enforces
/// conditional writes ([`probe_conditional_writes`]) and writes its node
/// record. Blocking.
pub fn join(config: ClusterConfig) -> Result<Cluster, JoinError> {
    let root = Arc::new(Bucket::connect(&config.target, true).map_err(ClusterError::from)?);
    let mut lease = LeaseOptions::default();
    let nodes = match &config.role {
        Role::Writer(writer) => {
            validate_node_id(&writer.node_id)?;
            let advertise = writer.advertise.trim_end_matches('/');
            let scheme_ok = advertise.starts_with("http://") || advertise.starts_with("https://");
            if !scheme_ok || advertise.parse::<axum::http::Uri>().is_err() {
                return Err(JoinError::Advertise(writer.advertise.clone()));
            }
            if writer.lease_ttl < Duration::from_secs(1) {
                return Err(JoinError::LeaseTtl(writer.lease_ttl));
            }
            let bytes = writer.segment_bytes;
            if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&bytes) || bytes % 8 != 0 {
                return Err(JoinError::SegmentBytes(bytes));
            }
            lease = lease_options(writer.lease_ttl);
            probe_conditional_writes(&root)?;
            let nodes = Nodes::new(
                root.clone(),
                &writer.node_id,
                advertise,
                lease.ttl_ms,
                lease.clock.clone(),
            );
            nodes.announce()?;
            nodes.refresh()?;
            Some(nodes)
        }
        Role::ReadOnly(_) => {
            // Reading is all a replica does: fail now if the bucket cannot be listed.
            root.list_dirs(WORKSPACES_PREFIX)
                .map_err(ClusterError::from)?;
            None
        }
    };
    Ok(Cluster {
        target: config.target,
        role: config.role,
        lease,
        remote: Some(Remote {
            root,
            nodes,
            buckets: Mutex::new(HashMap::new()),
        }),
        routes: Mutex::new(HashMap::new()),
        forward_failures: Mutex::new((None, 0)),
        http: reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .build()
            .unwrap_or_default(),
    })
}

impl Cluster {
    fn remote(&self) -> &Remote {
        // Taken only when dropped.
        #[allow(clippy::expect_used, reason = "taken only by Drop")]
        self.remote.as_ref().expect("the cluster's connections")
    }

    /// Whether this node serves read-only.
    pub fn is_read_only(&self) -> bool {
        matches!(self.role, Role::ReadOnly(_))
    }

    /// `s3://BUCKET/PREFIX`.
    pub fn target(&self) -> &ArchiveTarget {
        &self.target
    }

    /// This node's id (none for a read-only replica).
    pub fn node_id(&self) -> Option<&str> {
        match &self.role {
            Role::Writer(w) => Some(&w.node_id),
            Role::ReadOnly(_) => None,
        }
    }

    pub(crate) fn lease(&self) -> &LeaseOptions {
        &self.lease
    }

    pub(crate) fn nodes(&self) -> Option<&Nodes> {
        self.remote().nodes.as_ref()
    }

    pub(crate) fn root(&self) -> &Arc<Bucket> {
        &self.remote().root
    }

    /// The connection to `PREFIX/ws/<name>/`, made once. Blocking.
    pub(crate) fn workspace_bucket(&self, name: &str) -> Result<Arc<Bucket>, ClusterError> {
        let remote = self.remote();
        if let Some(bucket) = remote.buckets.lock().get(name) {
            return Ok(bucket.clone());
        }
        let mut target = self.target.clone();
        target.prefix = self.target.key(&format!("{WORKSPACES_PREFIX}/{name}"));
        let bucket = Arc::new(Bucket::connect(&target, true)?);
        remote
            .buckets
            .lock()
            .insert(name.to_string(), bucket.clone());
        Ok(bucket)
    }

    /// Whether the workspace exists in the bucket (it has a lease or a
    /// head). Blocking.
    pub(crate) fn exists(&self, name: &str) -> Result<bool, ClusterError> {
        let bucket = self.workspace_bucket(name)?;
        Ok(bucket.head(LEASE_OBJECT)?.is_some() || bucket.head(HEAD_OBJECT)?.is_some())
    }

    /// Opens workspace `name` in `dir` from the bucket: a writer takes its
    /// lease (creating it only with `create`), a replica follows it. `None`
    /// when it does not exist. Blocking.
    pub(crate) fn open(
        &self,
        name: &str,
        dir: &Path,
        create: bool,
    ) -> Result<Option<Opened>, ClusterError> {
        let create = create && !self.is_read_only();
        if !create && !self.exists(name)? {
            return Ok(None);
        }
        let bucket = self.workspace_bucket(name)?;
        match &self.role {
            Role::Writer(writer) => {
                let replica = Arc::new(Replicated::open(
                    dir,
                    bucket,
                    &writer.node_id,
                    self.lease.clone(),
                    writer.signer.clone(),
                    Options {
                        segment_bytes: writer.segment_bytes,
                        ..Options::default()
                    },
                    writer.replication.clone(),
                )?);
                self.forget_route(name);
                Ok(Some(Opened {
                    log: replica.log().clone(),
                    replication: Some(Arc::new(ReplicaAck(replica.clone()))),
                    held: Held::Writer(replica),
                }))
            }
            Role::ReadOnly(reader) => {
                let follower =
                    Follower::open(dir, bucket, reader.verifier.clone(), reader.follow.clone())?;
                let (log, _) = follower.log()?;
                Ok(Some(Opened {
                    log,
                    held: Held::Reader(Arc::new(follower)),
                    replication: None,
                }))
            }
        }
    }

    /// Where a request for `name` goes, as far as the lease and the live
    /// nodes tell (a writer node only). Blocking.
    pub(crate) fn route(&self, name: &str) -> Result<Route, ClusterError> {
        if let Some((route, at)) = self.routes.lock().get(name) {
            if at.elapsed() < ROUTE_CACHE {
                return Ok(route.clone());
            }
        }
        let Some(nodes) = self.nodes() else {
            return Ok(Route::Here);
        };
        let bucket = self.workspace_bucket(name)?;
        let now = (self.lease.clock)();
        let live_holder = read_lease(&bucket)?
            .map(|(record, _)| record)
            .filter(|record| {
                now < record
                    .expires_at_ms
                    .saturating_add(self.lease.skew_margin_ms)
            });
        let route = match live_holder {
            Some(record) if record.holder == nodes.me() => Route::Here,
            Some(record) => match nodes.advertise_of(&record.holder)? {
                Some(url) => Route::Forward {
                    node: record.holder,
                    url,
                    held: true,
                },
                // A holder that left no address: only waiting helps.
                None => Route::Forward {
                    node: record.holder,
                    url: String::new(),
                    held: true,
                },
            },
            None => {
                let live = nodes.live();
                let preferred = placement::preferred(live.iter().map(|n| n.node_id.as_str()), name)
                    .unwrap_or(nodes.me())
                    .to_string();
                match live.into_iter().find(|n| n.node_id == preferred) {
                    Some(node) if node.node_id != nodes.me() => Route::Forward {
                        node: node.node_id,
                        url: node.advertise,
                        held: false,
                    },
                    _ => Route::Here,
                }
            }
        };
        if route != Route::Here {
            self.routes
                .lock()
                .insert(name.to_string(), (route.clone(), Instant::now()));
        }
        Ok(route)
    }

    /// Forgets the cached route of `name` (after a forward failed, or once
    /// held here).
    pub(crate) fn forget_route(&self, name: &str) {
        self.routes.lock().remove(name);
    }

    /// Reports a failed forward on stderr: at most one line a second,
    /// counting the others (a dead holder fails every request until its
    /// lease runs out).
    pub(crate) fn report_forward_failure(&self, what: &dyn std::fmt::Display) {
        let mut failures = self.forward_failures.lock();
        let quiet = failures
            .0
            .is_some_and(|at| at.elapsed() < Duration::from_secs(1));
        if quiet {
            failures.1 += 1;
            return;
        }
        let more = std::mem::take(&mut failures.1);
        failures.0 = Some(Instant::now());
        drop(failures);
        match more {
            0 => eprintln!("chainlog serve: {what}"),
            n => eprintln!(
                "chainlog serve: {what} (and {n} more failed forwards since the last report)"
            ),
        }
    }

    /// The workspaces in the bucket. Blocking.
    pub(crate) fn workspaces_in_bucket(&self) -> Result<Vec<String>, ClusterError> {
        Ok(self.root().list_dirs(WORKSPACES_PREFIX)?)
    }
}

/// Lets go of a workspace whose writer was fenced: it is closed here (its
/// directory stays, a cache) and the next request is routed anew.
pub(crate) fn let_go(state: &AppState, workspace: &str) {
    if let Some(cluster) = state.workspaces.cluster() {
        cluster.forget_route(workspace);
    }
    state.workspaces.let_go(workspace);
}

//! The pod runner's sandbox (testkit::pods::sandbox) enforces what a container runtime enforces: each feature here
//! has a test that fails when the feature is broken. Real namespaces, real processes; traffic stays inside the
//! namespaces the test made, and everything is removed at the end.

use std::time::Duration;

use appdb_testkit::pods::{
    sandbox::{Container, Launch, Node, Sandbox},
    security::{Privileges, privileges},
};
use k8s_openapi::api::core::v1::SecurityContext;
use serde_json::json;

fn context(v: serde_json::Value) -> SecurityContext {
    serde_json::from_value(v).expect("security context")
}

fn start(sandbox: &Sandbox, hostname: &str, privileges: Privileges, script: &str, dir: &std::path::Path) -> Container {
    Container::start(Launch {
        netns: &sandbox.netns,
        hostname,
        argv: vec!["python3".into(), "-c".into(), script.into()],
        env: vec![],
        privileges,
        workdir: None,
        mounts: vec![],
        log: dir.join(format!("{hostname}.log")),
    })
    .expect("start the container")
}

fn log(c: &Container) -> String {
    std::fs::read_to_string(&c.log).unwrap_or_default()
}

const BIND_UDP_500: &str =
    "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.bind(('0.0.0.0', 500))\nprint('bound')";

/// What the VPN gateway met on a real node: with only NET_ADMIN a process cannot bind UDP 500 (IKE); with
/// NET_BIND_SERVICE added it can.
#[tokio::test]
async fn a_pod_with_only_net_admin_cannot_bind_udp_500() {
    let dir = tempfile::tempdir().expect("dir");
    let node = Node::start().await.expect("node");
    let sandbox = node.sandbox().await.expect("sandbox");
    let only_net_admin = privileges(
        None,
        Some(&context(
            json!({"capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]}}),
        )),
        0,
    )
    .expect("privileges");
    let mut refused = start(&sandbox, "gw-a", only_net_admin, BIND_UDP_500, dir.path());
    assert_eq!(refused.wait().await, 1, "{}", log(&refused));
    assert!(log(&refused).contains("Permission denied"), "{}", log(&refused));

    let with_bind = privileges(
        None,
        Some(&context(
            json!({"capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_BIND_SERVICE"]}}),
        )),
        0,
    )
    .expect("privileges");
    let mut bound = start(&sandbox, "gw-b", with_bind, BIND_UDP_500, dir.path());
    assert_eq!(bound.wait().await, 0, "{}", log(&bound));
    assert!(log(&bound).contains("bound"));
    sandbox.remove().await;
    node.stop().await;
}

/// The container's command is PID 1 of its own PID namespace: a PID 1 without a SIGTERM handler (`sh -c`)
/// ignores SIGTERM and is SIGKILLed after the grace period; one with a handler exits in time.
#[tokio::test]
async fn a_pid_1_that_ignores_sigterm_is_killed_after_its_grace_period() {
    let dir = tempfile::tempdir().expect("dir");
    let node = Node::start().await.expect("node");
    let sandbox = node.sandbox().await.expect("sandbox");
    let root = privileges(None, None, 0).expect("privileges");
    let launch = |hostname: &'static str, script: &str| Launch {
        netns: &sandbox.netns,
        hostname,
        argv: vec!["sh".into(), "-c".into(), script.into()],
        env: vec![],
        privileges: root.clone(),
        workdir: None,
        mounts: vec![],
        log: dir.path().join(format!("{hostname}.log")),
    };
    let mut deaf = Container::start(launch("deaf", "echo pid $$; sleep 60; echo never")).expect("start");
    deaf.wait_for_pid1(Duration::from_secs(5)).await.expect("pid 1");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(log(&deaf).contains("pid 1"), "the command is PID 1: {}", log(&deaf));
    let (code, grace_ran_out) = deaf.stop(Duration::from_secs(1)).await;
    assert!(grace_ran_out, "sh as PID 1 ignores SIGTERM");
    assert_eq!(code, 128 + 9);

    let mut polite = Container::start(launch(
        "polite",
        "trap 'echo bye; exit 0' TERM; while true; do sleep 0.1; done",
    ))
    .expect("start");
    polite.wait_for_pid1(Duration::from_secs(5)).await.expect("pid 1");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (code, grace_ran_out) = polite.stop(Duration::from_secs(10)).await;
    assert!(!grace_ran_out);
    assert_eq!(code, 0, "{}", log(&polite));
    assert!(log(&polite).contains("bye"));
    sandbox.remove().await;
    node.stop().await;
}

/// Two pods on one node reach each other at their pod addresses over the bridge; each has its pod name as hostname;
/// a non-root container runs as its user with no capabilities at all, and `no_new_privs` set.
#[tokio::test]
async fn pods_reach_each_other_and_run_as_their_user() {
    let dir = tempfile::tempdir().expect("dir");
    let node = Node::start().await.expect("node");
    let (a, b) = (node.sandbox().await.expect("a"), node.sandbox().await.expect("b"));
    assert_ne!(a.address, b.address);
    let non_root = privileges(
        None,
        Some(&context(
            json!({"runAsUser": 999, "runAsNonRoot": true, "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]}}),
        )),
        0,
    )
    .expect("privileges");
    let server = "import socket, os\n\
        s = socket.socket()\n\
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
        s.bind(('0.0.0.0', 8080))\n\
        s.listen()\n\
        status = open('/proc/self/status').read().splitlines()\n\
        print([l for l in status if l.startswith(('CapEff', 'NoNewPrivs'))], os.getuid(), flush=True)\n\
        c, _ = s.accept()\n\
        c.sendall(socket.gethostname().encode())\n\
        c.close()";
    let mut serving = start(&a, "orders-0", non_root, server, dir.path());
    let client = format!(
        "import socket, time\n\
         for _ in range(100):\n\
         \x20   try:\n\
         \x20       c = socket.create_connection(('{}', 8080), timeout=1); break\n\
         \x20   except OSError:\n\
         \x20       time.sleep(0.05)\n\
         print('answer', c.recv(100).decode(), 'to', socket.gethostname())",
        a.address
    );
    let root = privileges(None, None, 0).expect("privileges");
    let mut asking = start(&b, "session-0", root, &client, dir.path());
    assert_eq!(asking.wait().await, 0, "{}", log(&asking));
    assert_eq!(serving.wait().await, 0, "{}", log(&serving));
    assert!(
        log(&asking).contains("answer orders-0 to session-0"),
        "{}",
        log(&asking)
    );
    let seen = log(&serving);
    assert!(
        seen.contains("CapEff:\\t0000000000000000") && seen.contains("NoNewPrivs:\\t1") && seen.contains(" 999"),
        "{seen}"
    );
    assert!(
        seen.contains("readOnlyRootFilesystem is not enforced"),
        "what the runner cannot enforce is said in the pod's log: {seen}"
    );
    let (a_ns, node_ns) = (a.netns.clone(), node.netns.clone());
    a.remove().await;
    b.remove().await;
    node.stop().await;
    let left = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(!left.contains(&a_ns) && !left.contains(&node_ns), "left behind: {left}");
}

/// Volumes are bound only inside the container, and a container's /tmp is its own (an image has one): nothing it
/// writes there reaches this machine or another container. A read-only volume refuses writes.
#[tokio::test]
async fn volumes_and_tmp_stay_inside_the_container() {
    use appdb_testkit::pods::volumes::Mount;
    let dir = tempfile::tempdir().expect("dir");
    let node = Node::start().await.expect("node");
    let sandbox = node.sandbox().await.expect("sandbox");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data");
    std::fs::write(data.join("config"), "from the volume").expect("config");
    let marker = format!("appdb-private-{}", std::process::id());
    let mut c = Container::start(Launch {
        netns: &sandbox.netns,
        hostname: "files",
        argv: vec![
            "sh".into(),
            "-c".into(),
            format!(
                "cat /etc/appdb-test-volume/config; echo; touch /tmp/{marker} && ls /tmp; touch /etc/appdb-test-volume/x 2>/dev/null || echo read-only"
            ),
        ],
        env: vec![],
        privileges: privileges(None, None, 0).expect("privileges"),
        workdir: None,
        mounts: vec![Mount {
            source: data.clone(),
            target: "/etc/appdb-test-volume".into(),
            read_only: true,
        }],
        log: dir.path().join("files.log"),
    })
    .expect("start");
    assert_eq!(c.wait().await, 0);
    let out = log(&c);
    assert!(out.contains("from the volume"), "{out}");
    assert!(out.contains(&marker), "the container wrote its /tmp: {out}");
    assert!(out.contains("read-only"), "{out}");
    assert!(
        !std::path::Path::new("/tmp").join(&marker).exists(),
        "the container's /tmp is not this machine's"
    );
    assert!(!data.join("x").exists());
    sandbox.remove().await;
    node.stop().await;
}

/// A mount point that does not exist on this machine is made for the container and removed again once the last
/// container holding it is gone: a runtime makes mount points in the image's root file system, so nothing should
/// be left on the machine.
#[tokio::test]
async fn mount_points_made_on_the_machine_are_removed_with_their_last_container() {
    use appdb_testkit::pods::volumes::Mount;
    let dir = tempfile::tempdir().expect("dir");
    let node = Node::start().await.expect("node");
    let sandbox = node.sandbox().await.expect("sandbox");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data");
    std::fs::write(data.join("file"), "x").expect("file");
    let top = std::path::PathBuf::from(format!("/appdb-mount-point-{}", std::process::id()));
    assert!(!top.exists());
    let launch = |hostname: &'static str| Launch {
        netns: &sandbox.netns,
        hostname,
        argv: vec![
            "sh".into(),
            "-c".into(),
            format!("cat {0}/deep/folder/inner && exec sleep 30", top.display()),
        ],
        env: vec![],
        privileges: privileges(None, None, 0).expect("privileges"),
        workdir: None,
        mounts: vec![
            Mount {
                source: data.clone(),
                target: format!("{}/deep/folder", top.display()),
                read_only: false,
            },
            // Under the volume above: made inside it, never on the machine.
            Mount {
                source: data.join("file"),
                target: format!("{}/deep/folder/inner", top.display()),
                read_only: true,
            },
        ],
        log: dir.path().join(format!("{hostname}.log")),
    };
    let mut first = Container::start(launch("first")).expect("first");
    let mut second = Container::start(launch("second")).expect("second");
    first.wait_for_pid1(Duration::from_secs(5)).await.expect("first runs");
    second.wait_for_pid1(Duration::from_secs(5)).await.expect("second runs");
    let started = std::time::Instant::now();
    while !(log(&first).contains('x') && log(&second).contains('x')) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{} / {}",
            log(&first),
            log(&second)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        top.join("deep/folder").is_dir(),
        "the mount point exists while containers use it"
    );
    assert!(
        !top.join("deep/folder/inner").exists(),
        "nested mount points are made inside the volume"
    );
    first.stop(Duration::from_secs(1)).await;
    drop(first);
    assert!(top.join("deep/folder").is_dir(), "the second container still holds it");
    second.stop(Duration::from_secs(1)).await;
    drop(second);
    assert!(
        !top.exists(),
        "the last container's end removes every folder the runner made"
    );
    sandbox.remove().await;
    node.stop().await;
}

/// A container dropped while it runs (its test failed before stopping it) dies with its whole PID namespace, also
/// when its PID 1 runs as another user (the kernel clears the launcher's parent-death signal when setpriv changes
/// the user; MySQL pods of failed end-to-end runs were seen outliving their test).
#[tokio::test]
async fn a_container_dropped_without_a_stop_dies_even_as_another_user() {
    let dir = tempfile::tempdir().expect("dir");
    let node = Node::start().await.expect("node");
    let sandbox = node.sandbox().await.expect("sandbox");
    let c = start(
        &sandbox,
        "orphan",
        privileges(None, Some(&context(json!({"runAsUser": 999, "runAsGroup": 999}))), 0).expect("privileges"),
        "import time\ntime.sleep(300)",
        dir.path(),
    );
    let pid = c.wait_for_pid1(Duration::from_secs(5)).await.expect("PID 1");
    let status = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let started = std::time::Instant::now();
    while !status(pid).contains("Uid:\t999") {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "PID 1 never ran as 999:\n{}\nits log:\n{}",
            status(pid),
            log(&c)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(c);
    let started = std::time::Instant::now();
    loop {
        let s = status(pid);
        if s.is_empty() || s.contains("State:\tZ") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the container outlived its drop:\n{s}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sandbox.remove().await;
    node.stop().await;
}

//! `pgha-e2e`: start the local cluster, look at its pods' logs, and break things.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pgha_e2e::{Cluster, ClusterOptions, Error, Fault, ImageTable, PodRef};

#[derive(Parser)]
#[command(about = "The local Kubernetes cluster pgha's tests and demo run on")]
struct Cli {
    /// The cluster's state directory: kubeconfig, logs, PID files, volumes.
    #[arg(long, global = true, default_value = "e2e/.state")]
    state: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a cluster in the foreground until Ctrl-C or SIGTERM.
    Up {
        #[arg(long, default_value_t = 3)]
        nodes: u8,
        /// Loopback address block (0–13); clusters running at once need different ones.
        #[arg(long, default_value_t = 0)]
        index: u8,
        /// The pgha binary that plays the pgha/postgres and pgha/operator images.
        #[arg(long, default_value = "target/debug/pgha")]
        pgha: PathBuf,
    },
    /// Stop the cluster that `up` runs from this state directory.
    Down,
    /// Print a container's log.
    Logs {
        pod: PodRef,
        #[arg(short, long)]
        container: String,
    },
    /// SIGKILL a pod's processes (all containers, or one).
    Kill {
        pod: PodRef,
        #[arg(short, long)]
        container: Option<String>,
    },
    /// SIGSTOP a pod's processes.
    Freeze {
        pod: PodRef,
        #[arg(short, long)]
        container: Option<String>,
    },
    /// SIGCONT a frozen pod's processes.
    Thaw {
        pod: PodRef,
        #[arg(short, long)]
        container: Option<String>,
    },
    /// Stop a node agent (its processes run on, its Lease lapses) or start it again.
    Node {
        #[arg(value_parser = ["stop", "start"])]
        action: String,
        node: String,
    },
    /// Cut a pod off the network (iptables): nothing reaches it, it reaches nothing. With
    /// --from-api, only the API server: it still reaches every pod.
    Partition {
        pod: PodRef,
        #[arg(long)]
        from_api: bool,
    },
    /// Freeze (SIGSTOP) or thaw the kube-apiserver: the control plane stops answering.
    Apiserver {
        #[arg(value_parser = ["pause", "resume"])]
        action: String,
    },
    /// End a pod's partition.
    Heal { pod: PodRef },
    /// Delete a pod with grace period 0.
    DeleteNow { pod: PodRef },
    /// Print the address of a Service port (its cluster IP on loopback).
    Service {
        /// NAMESPACE/NAME
        service: PodRef,
        #[arg(long)]
        port: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("pgha-e2e: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgha-e2e: {e}");
            ExitCode::FAILURE
        }
    }
}

fn fail(what: impl std::fmt::Display) -> Error {
    // The library's error type carries a message; build one the same way.
    Error::from(what.to_string())
}

async fn execute(cli: Cli) -> Result<(), Error> {
    let state = cli.state;
    let fault = |pod: &PodRef, container: Option<String>, fault| {
        let n = pgha_e2e::inject(&state, pod, container.as_deref(), fault)?;
        println!("signalled {n} container(s)");
        Ok(())
    };
    match cli.command {
        Command::Up { nodes, index, pgha } => up(&state, nodes, index, &pgha).await,
        Command::Down => down(&state),
        Command::Logs { pod, container } => {
            print!("{}", pgha_e2e::logs(&state, &pod, &container));
            Ok(())
        }
        Command::Kill { pod, container } => fault(&pod, container, Fault::Kill),
        Command::Freeze { pod, container } => fault(&pod, container, Fault::Freeze),
        Command::Thaw { pod, container } => fault(&pod, container, Fault::Thaw),
        Command::Node { action, node } => {
            pgha_e2e::set_node_running(&state, &node, action == "start")
        }
        Command::Partition { pod, from_api } if from_api => {
            pgha_e2e::partition_from_api(&state, &pod)
        }
        Command::Partition { pod, .. } => pgha_e2e::partition(&state, &pod),
        Command::Apiserver { action } => pgha_e2e::pause_apiserver(&state, action == "pause"),
        Command::Heal { pod } => pgha_e2e::heal(&state, &pod),
        Command::DeleteNow { pod } => {
            let client = pgha_e2e::client(&state.join("kubeconfig")).await?;
            pgha_e2e::delete_now(&client, &pod).await
        }
        Command::Service { service, port } => {
            let client = pgha_e2e::client(&state.join("kubeconfig")).await?;
            let address = pgha_e2e::service_address(
                &client,
                &service.namespace,
                &service.name,
                port.as_deref(),
            )
            .await?;
            println!("{address}");
            Ok(())
        }
    }
}

fn running_pid(state: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(state.join("up.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    kill(Pid::from_raw(pid), None).is_ok().then_some(pid)
}

async fn up(state: &Path, nodes: u8, index: u8, pgha: &Path) -> Result<(), Error> {
    if let Some(pid) = running_pid(state) {
        return Err(fail(format!(
            "a cluster (PID {pid}) already runs from {}: `pgha-e2e down` first",
            state.display()
        )));
    }
    let pgha = std::path::absolute(pgha).map_err(fail)?;
    if !pgha.is_file() {
        return Err(fail(format!(
            "{} is missing: build it with `cargo build`",
            pgha.display()
        )));
    }
    // A fresh etcd knows nothing of an earlier run's pods and volumes.
    for old in ["pods", "nodes", "kubeconfig", "ready"] {
        let path = state.join(old);
        let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
    }
    std::fs::create_dir_all(state).map_err(fail)?;
    let state = std::path::absolute(state).map_err(fail)?;
    std::fs::write(state.join("up.pid"), std::process::id().to_string()).map_err(fail)?;
    let started = Instant::now();
    let options = ClusterOptions {
        nodes,
        index,
        state_dir: Some(state.clone()),
        images: ImageTable::default().with_pgha(&pgha),
    };
    let cluster = Cluster::start(options).await?;
    let kubeconfig = state.join("kubeconfig");
    std::fs::copy(cluster.kubeconfig(), &kubeconfig).map_err(fail)?;
    std::fs::write(state.join("ready"), b"").map_err(fail)?;
    println!(
        "cluster up in {:.1} s: {} nodes ({})",
        started.elapsed().as_secs_f64(),
        nodes,
        cluster.nodes().join(", ")
    );
    println!("export KUBECONFIG={}", kubeconfig.display());
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(fail)?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    println!("stopping the cluster");
    drop(cluster);
    let _ = std::fs::remove_file(state.join("ready"));
    let _ = std::fs::remove_file(state.join("up.pid"));
    Ok(())
}

fn down(state: &Path) -> Result<(), Error> {
    let Some(pid) = running_pid(state) else {
        println!("no cluster runs from {}", state.display());
        return Ok(());
    };
    kill(Pid::from_raw(pid), Signal::SIGTERM).map_err(fail)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while kill(Pid::from_raw(pid), None).is_ok() {
        if Instant::now() >= deadline {
            return Err(fail(format!("PID {pid} did not stop within 60 s")));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("cluster stopped");
    Ok(())
}

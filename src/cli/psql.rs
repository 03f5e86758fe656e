//! `pgha psql CLUSTER [--replica]` (`kubectl pgha psql`): the local `psql` against the
//! cluster's `-rw` (or `-ro`) Service, as the user of its `-app` (or `-superuser`) Secret.
//! The password goes to psql in its environment, never on a command line or the screen. The
//! server is verified with the CA of the `-app` Secret by the Service's name
//! (`sslmode=verify-full`).

use std::process::ExitCode;

use clap::Args;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::Api;

use super::kubectl::{Failure, KubeArgs, not_found};

#[derive(Args, Debug)]
pub struct PsqlArgs {
    /// The PgCluster.
    cluster: String,
    /// Connect to the replicas (`-ro`) instead of the primary (`-rw`).
    #[arg(long)]
    replica: bool,
    /// As the superuser (`<cluster>-superuser` Secret) instead of the application user.
    #[arg(long)]
    superuser: bool,
    /// Connect here instead of the Service's cluster IP (for `kubectl port-forward
    /// svc/<cluster>-rw 5432` from outside the cluster's network: `--host 127.0.0.1`).
    #[arg(long)]
    host: Option<String>,
    /// The port, with `--host`; the Service's otherwise.
    #[arg(long)]
    port: Option<u16>,
    /// The psql to run.
    #[arg(long, default_value = "psql")]
    psql: String,
    #[command(flatten)]
    kube: KubeArgs,
    /// Passed to psql as they are (after `--`: `pgha psql orders -- -c 'SELECT 1'`).
    #[arg(last = true)]
    psql_args: Vec<String>,
}

pub fn run(args: PsqlArgs) -> Result<ExitCode, Failure> {
    let target = tokio::runtime::Runtime::new()?.block_on(target(&args))?;
    let mut psql = std::process::Command::new(&args.psql);
    // The CA goes in a file of our own for psql to read, removed when it exits.
    let ca_file = match &target.ca {
        Some(ca) => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let path = std::env::temp_dir().join(format!("pgha-psql-{}.crt", std::process::id()));
            // A new file only (never one someone else put there), readable by us alone.
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .and_then(|mut file| file.write_all(ca.as_bytes()))
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
            psql.env("PGSSLROOTCERT", &path);
            Some(path)
        }
        None => None,
    };
    match (&ca_file, target.host.parse::<std::net::IpAddr>()) {
        // An address (the Service's, or a port-forward's): verified as the Service's name.
        (Some(_), Ok(_)) => psql
            .env("PGHOST", &target.verify_as)
            .env("PGHOSTADDR", &target.host)
            .env("PGSSLMODE", "verify-full"),
        (Some(_), Err(_)) => psql
            .env("PGHOST", &target.host)
            .env("PGSSLMODE", "verify-full"),
        // A cluster without certificates: encrypted if it can, and the password only by a
        // SCRAM exchange bound to that channel.
        (None, _) => psql
            .env("PGHOST", &target.host)
            .env("PGSSLMODE", "require")
            .env("PGCHANNELBINDING", "require"),
    };
    psql.args(&args.psql_args)
        .env("PGPORT", target.port.to_string())
        .env("PGUSER", &target.user)
        .env("PGDATABASE", &target.dbname)
        .env("PGPASSWORD", &target.password)
        .env("PGAPPNAME", "pgha-psql");
    let status = psql.status();
    if let Some(path) = ca_file {
        let _ = std::fs::remove_file(path);
    }
    let status = status.map_err(|e| {
        format!(
            "running {}: {e} (install the PostgreSQL client, or give --psql)",
            args.psql
        )
    })?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

struct Target {
    host: String,
    /// The Service's qualified name, which the server certificate carries.
    verify_as: String,
    /// The CA that signed the server certificate; None for a cluster without one.
    ca: Option<String>,
    port: u16,
    user: String,
    password: String,
    dbname: String,
}

async fn target(args: &PsqlArgs) -> Result<Target, Failure> {
    let (client, namespace) = args.kube.connect().await?;
    let which = if args.superuser { "superuser" } else { "app" };
    let secret_name = format!("{}-{which}", args.cluster);
    let secret = Api::<Secret>::namespaced(client.clone(), &namespace)
        .get(&secret_name)
        .await
        .map_err(|e| not_found("Secret", &namespace, &secret_name, e))?;
    let data = secret.data.unwrap_or_default();
    let value = |key: &str| -> Result<String, Failure> {
        let bytes = data
            .get(key)
            .ok_or_else(|| format!("Secret {namespace}/{secret_name} has no `{key}`"))?;
        Ok(String::from_utf8(bytes.0.clone())
            .map_err(|_| format!("Secret {namespace}/{secret_name}: `{key}` is not UTF-8"))?)
    };
    let service_name = format!(
        "{}-{}",
        args.cluster,
        if args.replica { "ro" } else { "rw" }
    );
    // The application's Secret carries the CA (a restored cluster may have none: then the
    // server Secret's).
    let secrets = Api::<Secret>::namespaced(client.clone(), &namespace);
    let mut ca = None;
    for holder in ["app", "server"] {
        let held = secrets
            .get_opt(&format!("{}-{holder}", args.cluster))
            .await?;
        ca = ca.or_else(|| String::from_utf8(held?.data?.get("ca.crt")?.0.clone()).ok());
    }
    let (host, port) = match &args.host {
        Some(host) => (host.clone(), args.port.unwrap_or(5432)),
        None => {
            let service = Api::<Service>::namespaced(client, &namespace)
                .get(&service_name)
                .await
                .map_err(|e| not_found("Service", &namespace, &service_name, e))?;
            let spec = service.spec.unwrap_or_default();
            let ip = spec
                .cluster_ip
                .filter(|ip| ip != "None")
                .ok_or_else(|| format!("Service {namespace}/{service_name} has no cluster IP"))?;
            let port = spec
                .ports
                .unwrap_or_default()
                .first()
                .and_then(|p| u16::try_from(p.port).ok())
                .unwrap_or(5432);
            (ip, args.port.unwrap_or(port))
        }
    };
    Ok(Target {
        host,
        verify_as: format!("{service_name}.{namespace}.svc"),
        ca,
        port,
        user: value("username")?,
        password: value("password")?,
        dbname: value("dbname").unwrap_or_else(|_| "postgres".into()),
    })
}

//! The command line: clap types only.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "wharf",
    version,
    about = "Deploy any service to any environment with one command"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// The definition file (default: wharf.yaml in this folder or a parent).
    #[arg(short = 'F', long = "file", global = true, env = "WHARF_FILE")]
    pub file: Option<PathBuf>,
    /// The controller to use (default: this project's local controller, started if needed).
    /// Several controllers sharing one database: their addresses, comma-separated (the
    /// leader is found). For `wharf agent`: the controllers' agent addresses, as
    /// `wharf token create` prints them.
    #[arg(long, global = true, env = "WHARF_CONTROLLER")]
    pub controller: Option<String>,
    /// Output format of listings.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Print only data and errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a commented wharf.yaml from the service folders found here (Python, Rust,
    /// Node, Go, a Dockerfile).
    Init {
        /// Replace an existing wharf.yaml.
        #[arg(long)]
        force: bool,
    },
    /// Check a definition file and report every problem in it.
    Validate,
    /// The version of this CLI and of the project's controller, if one runs.
    Version,
    /// Print a shell completion script: `wharf completions bash > /etc/bash_completion.d/wharf`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Copy standard input to an instance's log file, rotating it by size as it writes
    /// (started by the process driver for each instance).
    #[command(hide = true)]
    LogWriter {
        /// Rotate before the file would grow past this many bytes.
        #[arg(long)]
        max_bytes: u64,
        /// Rotated files kept.
        #[arg(long)]
        keep: u32,
        path: std::path::PathBuf,
    },
    /// Hold the listening sockets of an agent's service addresses across its restarts
    /// (started by the agent).
    #[command(hide = true)]
    ListenerHolder { socket: std::path::PathBuf },
    /// Print the JSON Schema of wharf.yaml.
    Schema,
    /// Submit wharf.yaml to the controller as its next definition revision (checked
    /// again there; policy changes need `admin` on the environments they touch).
    Apply {
        /// Why, for the history.
        #[arg(long, short = 'm')]
        message: Option<String>,
    },
    /// The controller's definition revisions.
    #[command(subcommand)]
    Definition(DefinitionCommand),
    /// Build a service into an immutable, content-addressed artifact and register it.
    Build(BuildArgs),
    /// List built artifacts.
    Artifacts {
        /// Only this service's artifacts.
        service: Option<String>,
    },
    /// Deploy a service (or every service) to an environment.
    ///
    /// Also accepts the form `wharf deploy artifact=SERVICE environment=ENV version=V`.
    Deploy(DeployArgs),
    /// Run services straight from their folders in a development environment and
    /// answer every saved file with new instances (the old serve until those are
    /// healthy); Ctrl-C leaves dev mode.
    Dev(DevArgs),
    /// Show what runs where.
    Status {
        #[arg(long = "env", short = 'e')]
        env: Option<String>,
        /// Exit 1 when a service is not converged (missing or extra instances, several
        /// versions at once, failing health checks); for scripts and CI.
        #[arg(long)]
        check: bool,
    },
    /// A live view of what each instance uses, busiest first (like `top`).
    Top {
        #[arg(long = "env", short = 'e')]
        env: Option<String>,
        /// Stop after this many refreshes (default: until interrupted).
        #[arg(long, short = 'n')]
        iterations: Option<u32>,
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 2)]
        every: u64,
    },
    /// List the deploys of a service in an environment.
    History {
        service: String,
        #[arg(long = "env", short = 'e')]
        env: String,
    },
    /// Go back to an earlier version, with the configuration it ran with.
    Rollback {
        service: String,
        #[arg(long = "env", short = 'e')]
        env: String,
        /// The version to return to (default: the one before the current).
        #[arg(long)]
        to: Option<String>,
    },
    /// Replace every instance of a service by a fresh one, the rolling way (each new one
    /// serves before the one it replaces is drained).
    Restart {
        service: String,
        #[arg(long = "env", short = 'e')]
        env: String,
    },
    /// Run a command once in an instance's environment and folder, as its user (inside
    /// the container for an image), and exit with its status.
    Exec {
        service: String,
        #[arg(long = "env", short = 'e')]
        env: String,
        /// The instance (its number, as `wharf status` shows it); default: the first.
        #[arg(long)]
        instance: Option<u32>,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Run N instances of a service in an environment: a new definition revision (kept
    /// until a changed wharf.yaml is applied, as `kubectl scale`), rolled out at once.
    Scale {
        service: String,
        #[arg(long = "env", short = 'e')]
        env: String,
        count: u32,
    },
    /// Show a service's logs.
    Logs {
        service: String,
        #[arg(long = "env", short = 'e')]
        env: String,
        /// Keep printing new lines as they are written.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Only this instance (its number, as `wharf status` shows it).
        #[arg(long)]
        instance: Option<u32>,
        /// How many lines of the past to show.
        #[arg(long, short = 'n', visible_alias = "tail", default_value_t = 100)]
        lines: usize,
        /// Only what was written in this past stretch, e.g. `10m`, `1h30m` (to within a
        /// second; with `--tail`, the last lines of it).
        #[arg(long, value_parser = since_duration)]
        since: Option<std::time::Duration>,
    },
    /// Stop a service in an environment.
    Stop {
        service: String,
        #[arg(long = "env", short = 'e')]
        env: String,
    },
    /// Stop every service of an environment (their data folders are kept).
    Down {
        #[arg(long = "env", short = 'e')]
        env: String,
        /// Also remove the instances' data folders, after a confirmation.
        #[arg(long)]
        purge: bool,
        /// Confirm `--purge` without asking (what a script or CI passes).
        #[arg(long, short = 'y', requires = "purge")]
        yes: bool,
    },
    /// Run the controller (with this host's agent in `--dev` mode).
    Server(ServerArgs),
    /// Run an agent on this host, joined to a controller (`--controller https://...`).
    Agent(AgentArgs),
    /// Manage join tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// List the hosts that joined, with their state and instances.
    Hosts {
        #[arg(long = "env", short = 'e')]
        env: Option<String>,
    },
    /// Act on one host.
    #[command(subcommand)]
    Host(HostCommand),
    /// Follow, promote or abort a blue-green or canary rollout.
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Provision or remove an environment's hosts (`hosts: { provider: netns }`).
    #[command(subcommand)]
    Env(EnvCommand),
    /// Read and change a service's configuration in an environment (versioned).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage secrets: encrypted at rest, given only to their service's instances.
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Deploy to the next environment exactly the artifact healthy in the previous one.
    Promote {
        service: String,
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        /// Promote even past the pipeline rule (recorded in history).
        #[arg(long)]
        force: bool,
    },
    /// Approve a deployment waiting in an environment with `approval: required`.
    Approve {
        /// The deployment's id, as `wharf deployments --pending` lists it (`7` or `#7`).
        #[arg(value_parser = deployment_id)]
        deployment: i64,
    },
    /// Refuse a waiting deployment; nothing runs.
    Reject {
        #[arg(value_parser = deployment_id)]
        deployment: i64,
    },
    /// Deployments: those waiting for approval, or one by its id.
    #[command(args_conflicts_with_subcommands = true)]
    Deployments {
        /// List those waiting for approval (the default).
        #[arg(long)]
        pending: bool,
        #[command(subcommand)]
        action: Option<DeploymentsAction>,
    },
    /// Print the dashboard's address: a one-time sign-in address (valid two minutes),
    /// or with `--open` open it in a browser.
    Ui {
        /// Open it with `xdg-open` instead of printing it.
        #[arg(long)]
        open: bool,
    },
    /// Show the audit log of every change made through the API.
    Audit {
        /// How many entries, newest first.
        #[arg(long, short = 'n', default_value_t = 50)]
        limit: usize,
    },
}

#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Stop this project's background controller (instances keep running; the next
    /// command starts a controller again, which adopts them).
    Stop,
}

#[derive(Debug, Subcommand)]
pub enum DefinitionCommand {
    /// List the revisions: who, when, why.
    History,
    /// Print a revision's text (default: the current one).
    Show { revision: Option<i64> },
    /// Compare revisions: none given, the current one with wharf.yaml; one, that
    /// revision with the current one; two, the first with the second. Exits 1 when
    /// they differ, as `diff` does.
    Diff { from: Option<i64>, to: Option<i64> },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Show the merged configuration and where each value comes from.
    Get(ServiceEnv),
    /// Set overrides: `KEY=VALUE ...` (a new revision; running instances follow).
    Set {
        #[command(flatten)]
        target: ServiceEnv,
        #[arg(required = true, value_name = "KEY=VALUE")]
        pairs: Vec<String>,
        /// Why, for the history.
        #[arg(long, short = 'm')]
        message: Option<String>,
    },
    /// Remove overrides (the declared values apply again).
    Unset {
        #[command(flatten)]
        target: ServiceEnv,
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
        #[arg(long, short = 'm')]
        message: Option<String>,
    },
    /// List the revisions: who, when, why.
    History(ServiceEnv),
    /// Bring back the overrides of an earlier revision (as a new revision).
    Rollback {
        #[command(flatten)]
        target: ServiceEnv,
        /// The revision to return to (default: the one before the newest).
        #[arg(long)]
        to: Option<i64>,
        #[arg(long, short = 'm')]
        message: Option<String>,
    },
    /// List the keys that differ between two environments (secrets: only whether).
    Diff {
        service: String,
        /// Two environments: `--env uat --env production`.
        #[arg(long = "env", short = 'e', num_args = 1, required = true)]
        envs: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct ServiceEnv {
    pub service: String,
    #[arg(long = "env", short = 'e')]
    pub env: String,
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Set a secret; the value is read from standard input or a prompt, never argv.
    Set {
        #[command(flatten)]
        target: ServiceEnv,
        key: String,
    },
    /// Remove a secret.
    Unset {
        #[command(flatten)]
        target: ServiceEnv,
        key: String,
    },
    /// List a service's secrets (names and versions, never values).
    List(ServiceEnv),
    /// Make a new master key and seal every secret again under it, without downtime.
    RotateKey,
}

#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// Make the hosts the definition asks for and start their agents (`provider: ssh`:
    /// install, join and start the agent on each machine, at most 10 at once).
    Up {
        env: String,
        /// `provider: ssh`: trust a machine's host key that neither the definition nor
        /// a known_hosts file names, and record it in the state folder's known_hosts.
        #[arg(long)]
        accept_new_host_key: bool,
        /// `provider: ssh`: the wharf binary to install (one built for the machines'
        /// architecture; default: this one).
        #[arg(long)]
        agent_binary: Option<std::path::PathBuf>,
    },
    /// Stop the environment's instances and remove every host `up` made.
    Down { env: String },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue an API token with scopes, such as `--scope ci:deploy --scope ci:config`
    /// (actions: read, deploy, config, secret, approve, admin, `*`; environments by name or `*`).
    Issue {
        /// A name for the token, shown in history and the audit log.
        name: String,
        #[arg(long = "scope", required = true, value_name = "ENV:ACTION")]
        scopes: Vec<String>,
    },
    /// List API tokens (never their secrets).
    List,
    /// Revoke an API token at once.
    Revoke { id: String },
    /// Issue a token hosts of an environment join with (printed once, on stdout).
    Create {
        #[arg(long = "env", short = 'e')]
        env: String,
        /// How long it stays valid, e.g. `1h`.
        #[arg(long, default_value = "1h")]
        ttl: humantime::Duration,
        /// How many hosts may join with it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Where the rollout is: its phase, the new version's share of requests, its steps.
    Status(RolloutArgs),
    /// Blue-green: switch all traffic to the new version. Canary: the next step.
    Promote {
        #[command(flatten)]
        target: RolloutArgs,
        /// Every remaining step at once (blue-green: retire the old set now).
        #[arg(long)]
        full: bool,
    },
    /// Send every request back to the old version and stop the new one.
    Abort(RolloutArgs),
}

#[derive(Debug, Args)]
pub struct RolloutArgs {
    pub service: String,
    #[arg(long = "env", short = 'e')]
    pub env: String,
}

#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// Take no new instances on a host (before maintenance).
    Drain(HostArgs),
    /// Let a drained host take instances again.
    Undrain(HostArgs),
    /// Revoke a host's credential: its agent gets nothing from now on.
    Revoke(HostArgs),
    /// Stop a provisioned host: SIGTERM to its agent and instances.
    Stop(HostArgs),
    /// Start a stopped or killed provisioned host's agent again.
    Start(HostArgs),
    /// Kill a provisioned host: SIGKILL to everything on it.
    Kill(HostArgs),
    /// Cut a provisioned host off the network; everything on it keeps running.
    Partition(HostArgs),
    /// Reconnect a partitioned host.
    Heal(HostArgs),
    /// Add one more machine to an environment of `provider: ssh` (a definition
    /// revision) and bootstrap it.
    Add(AddArgs),
    /// Install a new agent binary on SSH hosts, one host at a time; their instances keep
    /// running and are adopted by the new agent.
    Upgrade(UpgradeArgs),
    /// Remove an SSH host: drain it (its pooled instances move), stop and uninstall its
    /// agent, and revoke its certificate.
    Remove(HostArgs),
}

#[derive(Debug, Args)]
pub struct UpgradeArgs {
    /// One host (default: every host of `--env`).
    pub host: Option<String>,
    #[arg(long = "env", short = 'e')]
    pub env: Option<String>,
    /// The wharf binary to install (default: this one).
    #[arg(long)]
    pub agent_binary: Option<PathBuf>,
    #[arg(long)]
    pub accept_new_host_key: bool,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Its host name in wharf.
    pub host: String,
    #[arg(long = "env", short = 'e')]
    pub env: String,
    /// Where to log in: `USER@ADDRESS[:PORT]` (the environment's `user` when no USER).
    #[arg(long, value_name = "USER@ADDRESS[:PORT]")]
    pub ssh: String,
    /// Its host key, `TYPE BASE64` (default: known_hosts decides).
    #[arg(long)]
    pub host_key: Option<String>,
    #[arg(long)]
    pub accept_new_host_key: bool,
    /// The wharf binary to install (default: this one).
    #[arg(long)]
    pub agent_binary: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct HostArgs {
    pub host: String,
    #[arg(long = "env", short = 'e')]
    pub env: Option<String>,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The join token (needed once; also read from WHARF_JOIN_TOKEN, which keeps it out
    /// of the process list).
    #[arg(long, env = "WHARF_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,
    /// This host's name (default: the hostname). Nodes of the definition map to hosts by name.
    #[arg(long)]
    pub name: Option<String>,
    /// Labels, `k=v,k=v`.
    #[arg(long, value_delimiter = ',')]
    pub labels: Vec<String>,
    /// Where the agent keeps its state (default: /var/lib/wharf-agent, or WHARF_HOME).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Where the environment's other hosts reach this host's instances, over mutual TLS
    /// with the controller's certificates (port 0: any free port, reported to the
    /// controller).
    #[arg(long, default_value = "0.0.0.0:0")]
    pub mesh_listen: std::net::SocketAddr,
    /// Reads the join token from the first line of standard input (as `wharf env up`
    /// sends it over SSH), never from argv or the environment.
    #[arg(long, conflicts_with = "join_token")]
    pub token_stdin: bool,
    /// Joins and keeps the credentials, then exits (the agent is started afterwards,
    /// as a service).
    #[arg(long)]
    pub join_only: bool,
    /// Runs the agent under a supervisor that starts it again whenever it exits (where
    /// no systemd does that); SIGTERM stops both.
    #[arg(long, requires = "pid_file")]
    pub supervise: bool,
    /// Where the supervisor writes its pid.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    pub service: String,
    /// The version name; a name never points at two different contents.
    #[arg(long)]
    pub version: String,
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// The services (default: every service of the environment built from a folder).
    pub services: Vec<String>,
    /// The environment (default: the pipeline's first one `wharf dev` may run in).
    #[arg(long = "env", short = 'e')]
    pub env: Option<String>,
    /// On leaving, deploy again the versions that ran before dev mode.
    #[arg(long)]
    pub restore: bool,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// SERVICE, or `artifact=SERVICE environment=ENV version=V` in any order.
    pub target: Vec<String>,
    #[arg(long = "env", short = 'e')]
    pub env: Option<String>,
    /// The version to deploy (built first if the definition says how and it is new).
    /// Default: a version named after the current content, `dev-<digest>`.
    #[arg(long)]
    pub version: Option<String>,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Deploy a version that was never healthy in the previous environment of the
    /// pipeline (recorded in history).
    #[arg(long)]
    pub force: bool,
    /// When another deploy of the service holds its lock, wait for it (up to TIMEOUT,
    /// default 10m) instead of failing.
    #[arg(long, value_name = "TIMEOUT", num_args = 0..=1, default_missing_value = "10m", require_equals = true, value_parser = duration)]
    pub wait_lock: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ServerArgs {
    #[command(subcommand)]
    pub command: Option<ServerCommand>,
    /// Run the controller and this host's agent in one process (the laptop). Without it,
    /// a production controller: API tokens always, every node on a host that joined.
    #[arg(long)]
    pub dev: bool,
    /// Where state is kept (default: `.wharf/` beside wharf.yaml, or WHARF_HOME).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// With `--dev`: start the controller again whenever it dies (not when it is
    /// stopped), so its instances are watched again at once. The CLI starts its
    /// background controller so; `supervisor.pid` in the state folder names it.
    #[arg(long, requires = "dev")]
    pub supervise: bool,
    /// Address to listen on (`--dev`: default 127.0.0.1 on a free port; a production
    /// controller needs it given).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// Address agents connect to (mutual TLS; hosts join with tokens). Loopback by
    /// default: give `0.0.0.0:PORT` for agents on other machines.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub agent_listen: std::net::SocketAddr,
    /// Require an API token on every call (always so when listening beyond loopback).
    /// The first start writes an admin token to `admin.token` in the state folder.
    #[arg(long)]
    pub auth: bool,
    /// The master keyring secrets are sealed with (default: `master.keys` in the state
    /// folder). Keep it apart from the database's backups.
    #[arg(long, env = "WHARF_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
    /// Keep state in PostgreSQL (`postgres://USER@HOST[:PORT]/DB`, the password in
    /// PGPASSWORD) shared with other controllers, one of which leads; the others answer
    /// with its address and take over when it stops. Default: SQLite in the state folder.
    #[arg(long, env = "WHARF_STORE", conflicts_with = "dev")]
    pub store: Option<String>,
    /// The API address followers give callers while this controller leads (default:
    /// the `--listen` address).
    #[arg(long, requires = "store")]
    pub advertise: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum DeploymentsAction {
    /// Show one deployment: what it did, its state and message, and for an interrupted
    /// one how the controller resolved it.
    Show {
        #[arg(value_parser = deployment_id)]
        deployment: i64,
    },
    /// Stop a deploy in progress where it is and roll back what it changed; waits
    /// until it has.
    Cancel {
        #[arg(value_parser = deployment_id)]
        deployment: i64,
    },
}

/// A duration as `--since` takes it: `30s`, `10m`, `2h`.
fn since_duration(text: &str) -> Result<std::time::Duration, String> {
    wharf_core::duration::parse(text).map_err(|e| format!("{e} (e.g. `30s`, `10m`, `2h`)"))
}

/// A deployment id, with or without the `#` listings show.
fn deployment_id(text: &str) -> Result<i64, String> {
    text.trim_start_matches('#')
        .parse()
        .map_err(|_| format!("`{text}` is not a deployment id (a number, as listings show it)"))
}

/// A duration such as `30s`, `10m`.
fn duration(text: &str) -> Result<std::time::Duration, String> {
    wharf_core::duration::parse(text)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}

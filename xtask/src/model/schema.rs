//! The descriptor schema: what `services/NAME/service.toml`, `hosts/NAME.toml` and
//! `libs/NAME/lib.toml` may contain. Every struct rejects unknown keys so a typo is an error
//! with a location, not a silently ignored setting.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Whether a component exists yet. Planned and external components still get a descriptor so
/// every listing shows them instead of hiding them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Active,
    Planned,
    External,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Planned => "planned",
            Status::External => "external",
        }
    }
}

/// How a service runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceKind {
    /// A long-running container on a Docker host.
    Container,
    /// An MCP server spoken to over stdio: spawned by a client, exits on EOF.
    McpStdio,
    /// A CI workflow (GitHub Actions).
    Workflow,
    /// A job started by cron on a host.
    ScheduledJob,
    /// Managed on the host by other means (Ansible, shell); the descriptor documents it.
    HostManaged,
}

impl ServiceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceKind::Container => "container",
            ServiceKind::McpStdio => "mcp-stdio",
            ServiceKind::Workflow => "workflow",
            ServiceKind::ScheduledJob => "scheduled-job",
            ServiceKind::HostManaged => "host-managed",
        }
    }
}

/// Where a component's code comes from: a git remote pinned to a revision, or a directory in
/// the workspace (fixtures, vendored code).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// Git remote URL.
    pub git: Option<String>,
    /// Pinned revision: a commit id, tag or branch name.
    pub rev: Option<String>,
    /// Directory relative to the workspace root.
    pub path: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// Dockerfile vendored beside the descriptor, relative to `services/NAME/`.
    #[serde(default = "default_dockerfile")]
    pub dockerfile: String,
    /// Build context: a directory inside the component's source (default: its root). A
    /// service without a [source] builds from its own directory (vendored files only).
    #[serde(default)]
    pub context: Option<String>,
    /// Base image handed to the Dockerfile as the `BASE_IMAGE` build argument.
    pub base: String,
    /// Extra build arguments.
    #[serde(default)]
    pub args: BTreeMap<String, String>,
}

fn default_dockerfile() -> String {
    "Dockerfile".to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Port {
    /// Port the process listens on inside the container.
    pub container: u16,
    /// Port published on the host; absent = reachable on the service network only.
    pub host: Option<u16>,
    #[serde(default)]
    pub protocol: Protocol,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Volume {
    /// Named volume, owned by the service (`NAME` becomes `SERVICE-NAME` on the host).
    pub name: String,
    /// Mount point inside the container.
    pub target: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Run {
    /// argv; empty = the image's default command.
    #[serde(default)]
    pub command: Vec<String>,
    /// Working directory inside the container.
    pub workdir: Option<String>,
    #[serde(default)]
    pub ports: Vec<Port>,
    /// Environment; `${NAME}` refers to a declared secret of this service, or to a secret of a
    /// service this one depends on (`${other-service.NAME}`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub volumes: Vec<Volume>,
    #[serde(default)]
    pub depends_on: Vec<String>,
}

/// How a secret value comes to exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Generate {
    /// 32 random bytes as 64 hex digits (`openssl rand -hex 32`).
    Hex32,
    /// A Fernet key: url-safe base64 of 32 random bytes.
    Fernet,
    /// 24 random characters from `[A-Za-z0-9]` (safe inside URLs and env files).
    Password,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Secret {
    /// The environment variable name.
    pub name: String,
    /// Generated by the tool in this format.
    pub generate: Option<Generate>,
    /// Must come from the operator's environment (or the service's `.env`); never generated.
    #[serde(default)]
    pub from_env: bool,
    /// Where an operator gets the value, shown when it is missing.
    pub help: Option<String>,
    /// Only some checks or tool calls need it: its absence is reported, not fatal.
    #[serde(default)]
    pub optional: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    #[default]
    Get,
    Post,
    Put,
    Delete,
}

/// One check; used for `health` (is it up) and `smoke` (does it work end to end).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Check {
    Http(HttpCheck),
    Tcp(TcpCheck),
    Mcp(McpCheck),
    Command(CommandCheck),
    PythonImport(PythonImportCheck),
}

impl Check {
    pub fn type_name(&self) -> &'static str {
        match self {
            Check::Http(_) => "http",
            Check::Tcp(_) => "tcp",
            Check::Mcp(_) => "mcp",
            Check::Command(_) => "command",
            Check::PythonImport(_) => "python-import",
        }
    }

    /// The container port the check talks to, if any.
    pub fn port(&self) -> Option<u16> {
        match self {
            Check::Http(c) => Some(c.port),
            Check::Tcp(c) => Some(c.port),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCheck {
    pub name: Option<String>,
    pub port: u16,
    pub path: String,
    #[serde(default)]
    pub method: Method,
    /// JSON request body; string values may use `${captured}` from earlier checks.
    pub body: Option<toml::Value>,
    /// Extra request headers; values may use `${captured}`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "default_status")]
    pub status: u16,
    /// Fields the JSON answer must have with exactly these values.
    #[serde(default)]
    pub json: BTreeMap<String, toml::Value>,
    /// Fields the JSON answer must have, any value.
    #[serde(default)]
    pub json_fields: Vec<String>,
    /// Save answer fields for later checks: `{ token = "token" }` saves field `token` as
    /// `${token}`.
    #[serde(default)]
    pub capture: BTreeMap<String, String>,
}

fn default_status() -> u16 {
    200
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TcpCheck {
    pub name: Option<String>,
    pub port: u16,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct McpCheck {
    pub name: Option<String>,
    /// Expected `serverInfo.name` of the `initialize` answer.
    pub server_name: String,
    /// Expected set of tool names from `tools/list` (order does not matter).
    pub tools: Vec<String>,
    /// Optional `tools/call` to make.
    pub call: Option<McpCall>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct McpCall {
    pub tool: String,
    #[serde(default)]
    pub arguments: toml::Table,
    /// Text the first content item must contain.
    pub expect_text: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CommandCheck {
    pub name: Option<String>,
    /// argv run inside the service's image.
    pub command: Vec<String>,
    #[serde(default)]
    pub exit_code: i32,
    /// Text stdout must contain.
    pub stdout_contains: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PythonImportCheck {
    pub name: Option<String>,
    /// `module` or `module:attribute`.
    pub import: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// The check that says the service is up.
    pub check: Check,
    /// How long a start may take before the service counts as failed.
    #[serde(default = "default_deadline")]
    pub deadline_secs: u64,
    #[serde(default = "default_interval")]
    pub interval_ms: u64,
}

fn default_deadline() -> u64 {
    60
}
fn default_interval() -> u64 {
    500
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackupKind {
    /// `pg_dump | gzip` to a dated file.
    PgDump,
    /// Tar of the service's volumes.
    Volumes,
    /// The data lives in git; nothing to do on the host.
    Git,
    /// Not needed (stateless or a rebuildable cache).
    None,
    /// Done by hand; the descriptor says so.
    Manual,
}

impl BackupKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupKind::PgDump => "pg-dump",
            BackupKind::Volumes => "volumes",
            BackupKind::Git => "git",
            BackupKind::None => "none",
            BackupKind::Manual => "manual",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Backup {
    pub kind: BackupKind,
    /// Cron expression (5 fields).
    pub schedule: Option<String>,
    pub retention_days: Option<u32>,
    /// For pg-dump: env names holding the database and user (defaults POSTGRES_DB/USER).
    pub database_env: Option<String>,
    pub user_env: Option<String>,
}

/// A CI workflow a `workflow` service declares.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Workflow {
    pub name: String,
    /// Cron schedules (UTC).
    #[serde(default)]
    pub schedule: Vec<String>,
    /// Manual trigger (`workflow_dispatch`).
    #[serde(default)]
    pub manual: bool,
    pub python: Option<String>,
    /// Shell step that installs dependencies.
    pub install: Option<String>,
    /// Shell step that does the work.
    pub run: String,
    /// Secrets the workflow reads, by name.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// `permissions:` of the job, e.g. `{ issues = "write" }`.
    #[serde(default)]
    pub permissions: BTreeMap<String, String>,
}

/// What a human reads in the deployment matrix.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Docs {
    /// How it runs, in words ("24/7 Flask API + PostgreSQL").
    pub model: Option<String>,
    /// What data it keeps.
    pub data: Option<String>,
    /// Recovery target.
    pub recovery: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceFile {
    pub name: String,
    pub description: String,
    pub status: Status,
    pub kind: ServiceKind,
    pub source: Option<Source>,
    pub image: Option<Image>,
    pub run: Option<Run>,
    #[serde(default)]
    pub secrets: Vec<Secret>,
    pub health: Option<Health>,
    #[serde(default)]
    pub smoke: Vec<Check>,
    pub backup: Option<Backup>,
    #[serde(default)]
    pub workflows: Vec<Workflow>,
    #[serde(default)]
    pub docs: Docs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reach {
    /// The machine the tool runs on.
    Local,
    /// An OpenSSH host (`ssh = "user@host[:port]"`).
    Ssh,
    /// GitHub-hosted runners: descriptors become workflow files.
    GithubActions,
    /// Python libraries imported into a venv; no processes of its own.
    Imported,
}

impl Reach {
    pub fn as_str(self) -> &'static str {
        match self {
            Reach::Local => "local",
            Reach::Ssh => "ssh",
            Reach::GithubActions => "github-actions",
            Reach::Imported => "imported",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FirewallRule {
    pub port: u16,
    #[serde(default)]
    pub protocol: Protocol,
    /// Source subnet allowed (CIDR); everything else is denied.
    pub allow: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyRoute {
    /// URL path prefix.
    pub path: String,
    pub service: String,
    /// The service's container port.
    pub port: u16,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Proxy {
    #[serde(default = "default_server_name")]
    pub server_name: String,
    #[serde(default = "default_listen")]
    pub listen: u16,
    #[serde(default)]
    pub routes: Vec<ProxyRoute>,
}

fn default_server_name() -> String {
    "_".to_string()
}
fn default_listen() -> u16 {
    80
}

/// What a cron entry does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CronTask {
    /// The service's declared backup.
    Backup,
    /// Delete backups older than the service's retention.
    Prune,
    /// Check the service's health; log and alert when it is down.
    Health,
    /// Run `command` (argv).
    Command,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CronEntry {
    pub name: String,
    /// Cron expression (5 fields, host time zone).
    pub schedule: String,
    pub task: CronTask,
    /// Service the task is about (backup, prune, health).
    pub service: Option<String>,
    /// argv for `task = "command"`.
    #[serde(default)]
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HostFile {
    pub name: String,
    pub description: String,
    #[serde(default = "default_active")]
    pub status: Status,
    pub reach: Reach,
    /// `user@host[:port]` for `reach = "ssh"`.
    pub ssh: Option<String>,
    /// Directory on the host that holds one folder per service.
    pub root: Option<String>,
    #[serde(default)]
    pub services: Vec<String>,
    #[serde(default)]
    pub libs: Vec<String>,
    #[serde(default)]
    pub firewall: Vec<FirewallRule>,
    pub proxy: Option<Proxy>,
    #[serde(default)]
    pub cron: Vec<CronEntry>,
    /// Resources the host needs, for the record ("4 cores, 4 GB RAM, 20 GB disk").
    pub requirements: Option<String>,
}

fn default_active() -> Status {
    Status::Active
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LibFile {
    pub name: String,
    pub description: String,
    #[serde(default = "default_active")]
    pub status: Status,
    pub source: Option<Source>,
    /// Directory inside the source that holds the top-level packages (`src`, or `.`).
    #[serde(default = "default_import_root")]
    pub import_root: String,
    /// Requirements file inside the source, installed into the venv.
    pub requirements: Option<String>,
    /// Packages installed instead of (or besides) the requirements file, for libraries whose
    /// own requirements are far heavier than what the code imports.
    #[serde(default)]
    pub packages: Vec<String>,
    /// `module` or `module:attribute`, each imported in the venv after install.
    #[serde(default)]
    pub import_checks: Vec<String>,
    #[serde(default)]
    pub docs: Docs,
}

fn default_import_root() -> String {
    ".".to_string()
}

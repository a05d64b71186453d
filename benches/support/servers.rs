//! The servers the HTTP benches start and stop: grace's own (`grace
//! demo-upstream`, `grace serve`) and the peers it is compared with (nginx,
//! Varnish), each a child process on loopback ports with its files in the
//! bench's temporary directory.
//!
//! A [`Server`] is stopped when dropped (SIGTERM, then SIGKILL if it lingers),
//! so a bench that fails half-way leaves nothing running. Its stderr goes to
//! a file, whose end is shown when it fails to start. The peers' configs
//! are the committed files under `benches/outage/`, with their `@NAME@`
//! placeholders filled in by [`render`].

use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Result;

/// Longest a server may take to say where it listens, or to answer.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest a server may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// The timeout of the blocking control client.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

/// The grace binary the bench was built with (release under `cargo bench`).
pub const GRACE: &str = env!("CARGO_BIN_EXE_grace");
/// Where the committed configs of the peers live.
pub const OUTAGE_CONFIGS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/outage");

/// A free loopback port, found by binding port 0 (the port is free again
/// when this returns: a server started right after can bind it).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A loopback address on a free port.
pub fn free_address() -> Result<SocketAddr> {
    Ok(SocketAddr::from(([127, 0, 0, 1], free_port()?)))
}

/// A child process under test.
pub struct Server {
    name: String,
    child: Child,
    stderr_path: PathBuf,
    stdout_lines: Option<mpsc::Receiver<String>>,
}

impl Server {
    /// Starts `command` with its stderr in `dir/<name>.stderr`; stdout is
    /// read line by line when `reads_stdout`, else discarded.
    pub fn start(name: &str, mut command: Command, dir: &Path) -> Result<Server> {
        let stderr_path = dir.join(format!("{name}.stderr"));
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&stderr_path)?);
        let mut child = command
            .spawn()
            .map_err(|err| format!("cannot start {name} ({command:?}): {err}"))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (sender, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                // Keep reading (so the child never blocks on a full pipe)
                // even when no one listens any more.
                let _ = sender.send(line);
            }
        });
        Ok(Server {
            name: name.to_string(),
            child,
            stderr_path,
            stdout_lines: Some(lines),
        })
    }

    /// The JSON line a grace server prints once it listens.
    pub fn start_line(&mut self) -> Result<Value> {
        let lines = self.stdout_lines.as_ref().expect("stdout is read");
        let line = lines.recv_timeout(START_TIMEOUT).map_err(|_| {
            format!(
                "{} printed no start-up line within {START_TIMEOUT:?}\n{}",
                self.name,
                self.stderr_tail()
            )
        })?;
        Ok(serde_json::from_str(&line)
            .map_err(|err| format!("{}: start-up line {line:?} is not JSON: {err}", self.name))?)
    }

    /// Waits until `address` answers an HTTP GET of `path` (any status).
    pub fn wait_until_answering(&mut self, address: SocketAddr, path: &str) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let agent = control_agent();
        let url = format!("http://{address}{path}");
        loop {
            if agent.get(&url).call().is_ok() {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                return Err(format!(
                    "{} exited with {status} at start\n{}",
                    self.name,
                    self.stderr_tail()
                )
                .into());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} does not answer on {address} after {START_TIMEOUT:?}\n{}",
                    self.name,
                    self.stderr_tail()
                )
                .into());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last lines of its stderr, to show when something went wrong.
    pub fn stderr_tail(&self) -> String {
        let text = fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(20)..];
        tail.iter()
            .map(|line| format!("  {} stderr: {line}\n", self.name))
            .collect()
    }

    /// The process id, to read its CPU time.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops it: SIGTERM, then SIGKILL after [`STOP_TIMEOUT`].
    pub fn stop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A blocking HTTP client for control calls: statuses are answers.
pub fn control_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(CONTROL_TIMEOUT))
        .build()
        .into()
}

/// The address under `key` of a start-up line.
fn address_in(line: &Value, key: &str) -> Result<SocketAddr> {
    line[key]
        .as_str()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| format!("start-up line {line} has no {key:?} address").into())
}

/// A running `grace demo-upstream`, with its control API.
pub struct DemoUpstream {
    pub listen: SocketAddr,
    pub control: SocketAddr,
    agent: ureq::Agent,
    server: Server,
}

/// The demo upstream's fault modes the benches use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Healthy,
    /// Accepts requests and never answers them.
    Hang,
    /// Refuses connections.
    Refuse,
}

impl Fault {
    pub fn mode(self) -> &'static str {
        match self {
            Fault::Healthy => "healthy",
            Fault::Hang => "hang",
            Fault::Refuse => "refuse",
        }
    }
}

impl DemoUpstream {
    /// Starts one on free ports, logging warnings only.
    pub fn start(dir: &Path) -> Result<DemoUpstream> {
        let mut command = Command::new(GRACE);
        command.args([
            "demo-upstream",
            "--listen",
            "127.0.0.1:0",
            "--control-listen",
            "127.0.0.1:0",
            "--log-level",
            "warn",
        ]);
        let mut server = Server::start("demo-upstream", command, dir)?;
        let line = server.start_line()?;
        Ok(DemoUpstream {
            listen: address_in(&line, "listen")?,
            control: address_in(&line, "control")?,
            agent: control_agent(),
            server,
        })
    }

    /// Puts `fault` in force (answered once it is).
    pub fn set(&self, fault: Fault) -> Result<()> {
        let url = format!("http://{}/faults", self.control);
        let body = serde_json::json!({ "mode": fault.mode() }).to_string();
        let response = self
            .agent
            .put(&url)
            .content_type("application/json")
            .send(body.as_str())
            .map_err(|err| self.control_failed(&format!("PUT {url} {body}"), err))?;
        if response.status() != 200 {
            return Err(format!("PUT {url} {body}: {}", response.status()).into());
        }
        Ok(())
    }

    /// Requests its main listener has seen since it started.
    pub fn requests_seen(&self) -> Result<u64> {
        let url = format!("http://{}/stats", self.control);
        let mut response = self
            .agent
            .get(&url)
            .call()
            .map_err(|err| self.control_failed(&format!("GET {url}"), err))?;
        let stats: Value = serde_json::from_str(&response.body_mut().read_to_string()?)?;
        stats["requests"]
            .as_u64()
            .ok_or_else(|| format!("GET {url}: no request count in {stats}").into())
    }

    pub fn stderr_tail(&self) -> String {
        self.server.stderr_tail()
    }

    pub fn pid(&self) -> u32 {
        self.server.pid()
    }

    /// The error of a control call that got no answer, saying whether the
    /// process is still there.
    fn control_failed(&self, call: &str, err: ureq::Error) -> Box<dyn std::error::Error> {
        let state = fs::read_to_string(format!("/proc/{}/stat", self.server.child.id()))
            .ok()
            .and_then(|stat| {
                let after_name = stat.rsplit_once(')')?.1.trim_start().to_string();
                after_name.chars().next()
            });
        let process = match state {
            None | Some('Z') | Some('X') => "the demo upstream has exited",
            Some(_) => "the demo upstream is still running",
        };
        format!("{call}: {err} ({process})").into()
    }
}

/// A running `grace serve`.
pub struct Gateway {
    pub listen: SocketAddr,
    pub server: Server,
}

impl Gateway {
    /// Starts `grace serve` with the configuration `config` (TOML text),
    /// written to `dir`, with its journal in a fresh directory there.
    pub fn start(name: &str, config: &str, dir: &Path) -> Result<Gateway> {
        let config_path = dir.join(format!("{name}.toml"));
        fs::write(&config_path, config)?;
        let data_dir = dir.join(format!("{name}-data"));
        fs::create_dir_all(&data_dir)?;
        let mut command = Command::new(GRACE);
        command
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .arg("--data-dir")
            .arg(&data_dir)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--log-level",
                "warn",
            ]);
        let mut server = Server::start(name, command, dir)?;
        let line = server.start_line()?;
        Ok(Gateway {
            listen: address_in(&line, "listen")?,
            server,
        })
    }
}

/// `template` with each `@NAME@` replaced by its value; fails if one is
/// left (a committed config naming a placeholder the bench does not fill).
pub fn render(template: &str, values: &[(&str, String)]) -> Result<String> {
    let mut text = template.to_string();
    for (name, value) in values {
        text = text.replace(&format!("@{name}@"), value);
    }
    if let Some(start) = text.find('@')
        && let Some(length) = text[start + 1..].find('@')
    {
        let name = &text[start..start + length + 2];
        if !name.contains(char::is_whitespace) {
            return Err(format!("config placeholder {name} is not filled in").into());
        }
    }
    Ok(text)
}

/// The committed config `name` under `benches/outage/`, rendered.
pub fn outage_config(name: &str, values: &[(&str, String)]) -> Result<String> {
    let path = Path::new(OUTAGE_CONFIGS).join(name);
    let template = fs::read_to_string(&path)
        .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    render(&template, values)
}

/// Where a program is: on `PATH`, or in the `sbin` directories a
/// non-root `PATH` often lacks.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// The peers grace is compared with, as Debian packages them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Nginx,
    Varnish,
}

impl Peer {
    pub const ALL: [Peer; 2] = [Peer::Nginx, Peer::Varnish];

    pub fn program(self) -> &'static str {
        match self {
            Peer::Nginx => "nginx",
            Peer::Varnish => "varnishd",
        }
    }

    pub fn package(self) -> &'static str {
        match self {
            Peer::Nginx => "nginx",
            Peer::Varnish => "varnish",
        }
    }
}

/// Whether the bench may install missing peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Install {
    /// With apt-get, when running as root.
    WhenMissing,
    /// Never (a smoke run): missing peers are skipped.
    Never,
}

/// The peers that can run, installing the missing ones when allowed and
/// possible; says on stdout what is skipped and why.
pub fn available_peers(wanted: &[Peer], install: Install) -> Vec<Peer> {
    let missing: Vec<Peer> = wanted
        .iter()
        .copied()
        .filter(|peer| find_program(peer.program()).is_none())
        .collect();
    if !missing.is_empty() {
        let packages: Vec<&str> = missing.iter().map(|peer| peer.package()).collect();
        let command = format!("apt-get install -y {}", packages.join(" "));
        match install {
            Install::Never => println!(
                "skipped: {} not installed (a smoke run installs nothing; `{command}` as root, \
                 or `cargo bench --bench outage` as root, installs them)",
                packages.join(" and ")
            ),
            Install::WhenMissing if is_root() => {
                println!(
                    "installing {} from Debian's packages: {command}",
                    packages.join(" and ")
                );
                if let Err(err) = apt_get_install(&packages) {
                    println!("skipped: could not install them: {err}");
                }
            }
            Install::WhenMissing => println!(
                "skipped: {} not installed and this is not root: run `sudo {command}` first",
                packages.join(" and ")
            ),
        }
    }
    wanted
        .iter()
        .copied()
        .filter(|peer| find_program(peer.program()).is_some())
        .collect()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

/// `apt-get install -y` without starting the packages' system services
/// (`RUNLEVEL=1`: the bench runs its own instances, on its own ports).
fn apt_get_install(packages: &[&str]) -> Result<()> {
    let install = |update: bool| -> Result<bool> {
        if update {
            Command::new("apt-get")
                .args(["update", "-q"])
                .stdout(Stdio::null())
                .status()?;
        }
        Ok(Command::new("apt-get")
            .args(["install", "-y", "-q"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("RUNLEVEL", "1")
            .stdout(Stdio::null())
            .status()?
            .success())
    };
    // The package lists may be missing or old: update once if needed.
    if install(false)? || install(true)? {
        Ok(())
    } else {
        Err("apt-get install failed".into())
    }
}

/// An nginx started on a committed config, in the foreground.
pub struct Nginx {
    pub listen: SocketAddr,
    pub server: Server,
}

impl Nginx {
    /// Starts nginx on `benches/outage/<config>` with `@LISTEN@`,
    /// `@PREFIX@` and `values` filled in, its files under `dir/<name>`.
    pub fn start(name: &str, config: &str, values: &[(&str, String)], dir: &Path) -> Result<Nginx> {
        let prefix = dir.join(name);
        fs::create_dir_all(&prefix)?;
        let listen = free_address()?;
        let mut all = vec![
            ("LISTEN", listen.to_string()),
            ("PREFIX", prefix.display().to_string()),
        ];
        all.extend(values.iter().cloned());
        let config_path = prefix.join("nginx.conf");
        fs::write(&config_path, outage_config(config, &all)?)?;
        let program = find_program(Peer::Nginx.program()).ok_or("nginx is not installed")?;
        let mut command = Command::new(program);
        command
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&config_path)
            .args(["-e", "stderr", "-g"])
            .arg(format!(
                "daemon off; pid {}; error_log stderr warn;",
                prefix.join("nginx.pid").display()
            ));
        let mut server = Server::start(name, command, dir)?;
        server.wait_until_answering(listen, "/")?;
        Ok(Nginx { listen, server })
    }
}

/// A varnishd started on the committed VCL, in the foreground.
pub struct Varnish {
    pub listen: SocketAddr,
    pub server: Server,
}

impl Varnish {
    /// Starts varnishd on `benches/outage/varnish.vcl` in front of
    /// `upstream`, its working directory under `dir/<name>`.
    pub fn start(name: &str, upstream: SocketAddr, dir: &Path) -> Result<Varnish> {
        let workdir = dir.join(name);
        fs::create_dir_all(&workdir)?;
        let listen = free_address()?;
        let vcl = outage_config(
            "varnish.vcl",
            &[
                ("UPSTREAM_HOST", upstream.ip().to_string()),
                ("UPSTREAM_PORT", upstream.port().to_string()),
            ],
        )?;
        let vcl_path = dir.join(format!("{name}.vcl"));
        fs::write(&vcl_path, vcl)?;
        let program = find_program(Peer::Varnish.program()).ok_or("varnishd is not installed")?;
        let mut command = Command::new(program);
        command
            .arg("-F")
            .arg("-a")
            .arg(listen.to_string())
            .arg("-f")
            .arg(&vcl_path)
            .arg("-n")
            .arg(&workdir)
            .args(["-s", "malloc,64m", "-T", "127.0.0.1:0"]);
        let mut server = Server::start(name, command, dir)?;
        server.wait_until_answering(listen, "/")?;
        Ok(Varnish { listen, server })
    }
}

//! What no one here wrote: `wrk` drives the HTTP scenarios and `nginx` (one worker, the same
//! static FCM-shaped answer) is the yardstick the targets are against, both Debian's packages.
//! The bench installs them with apt-get when they are missing (as `.ci/run` installs what the
//! tests need), and says so when it cannot.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Figures;

/// wrk's threads and connections: one thread (the machine has two cores; the server gets the
/// other), 32 keep-alive connections, as the issue that asked for this measured it.
pub const WRK_THREADS: usize = 1;
pub const WRK_CONNECTIONS: usize = 32;

pub struct Tools {
    pub wrk: PathBuf,
    pub nginx: PathBuf,
}

fn found(name: &str) -> Option<PathBuf> {
    ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

/// wrk and nginx, installed from Debian's packages if missing.
pub fn tools() -> Result<Tools, String> {
    if found("wrk").is_none() || found("nginx").is_none() {
        eprintln!("load: installing Debian's wrk and nginx (apt-get) for the yardstick");
        let status = Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends", "wrk", "nginx-light"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status();
        if !status.is_ok_and(|s| s.success()) {
            // nginx-light is gone from newer Debian releases: nginx is the same server.
            let _ = Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends", "wrk", "nginx"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdout(Stdio::null())
                .status();
        }
    }
    match (found("wrk"), found("nginx")) {
        (Some(wrk), Some(nginx)) => Ok(Tools { wrk, nginx }),
        _ => Err("wrk and nginx are not installed and apt-get could not install them".into()),
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// nginx with one worker process answering every request with `body`, stopped when dropped.
pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
    dir: PathBuf,
}

impl Nginx {
    pub fn start(tools: &Tools, body: &str) -> Nginx {
        let dir = std::env::temp_dir().join(format!("gcmspec-load-nginx-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a directory for nginx");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("an address");
        let d = dir.display();
        // One process that is the worker (no master): its RSS is the server's.
        let conf = format!(
            "master_process off; daemon off; worker_processes 1; error_log {d}/error.log; pid {d}/nginx.pid;\n\
             events {{ worker_connections 1024; }}\n\
             http {{ access_log off; keepalive_requests 100000000; client_body_temp_path {d}/body;\n\
               proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
               server {{ listen {addr}; location / {{ default_type \"application/json; charset=UTF-8\"; return 200 '{body}'; }} }} }}\n"
        );
        std::fs::write(dir.join("nginx.conf"), conf).expect("nginx.conf");
        let mut command = Command::new(&tools.nginx);
        command.arg("-p").arg(&dir).arg("-c").arg(dir.join("nginx.conf")).stdout(Stdio::null());
        crate::placement::for_server(&mut command);
        let child = command.spawn().expect("starting nginx");
        let until = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < until, "nginx did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
        crate::placement::serving(child.id(), crate::placement::Serving::Everything);
        Nginx { child, addr, dir }
    }

    pub fn rss_mb(&self) -> f64 {
        crate::rss_mb(self.child.id())
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// POSTs `body` to `addr` `path` with wrk for `seconds` (after a one-second run not
/// counted), with the sender's key: requests/s and latency percentiles.
pub fn wrk(tools: &Tools, addr: SocketAddr, path: &str, key: &str, body: &str, seconds: f64) -> Figures {
    let dir = std::env::temp_dir().join(format!("gcmspec-load-wrk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory for wrk");
    std::fs::write(dir.join("body.json"), body).expect("the body");
    let script = format!(
        "local f = io.open('{}', 'rb')\nwrk.method = 'POST'\nwrk.body = f:read('*a')\nf:close()\n\
         wrk.headers['Content-Type'] = 'application/json'\nwrk.headers['Authorization'] = 'key={key}'\n",
        dir.join("body.json").display()
    );
    std::fs::write(dir.join("post.lua"), script).expect("the script");
    let url = format!("http://{addr}{path}");
    let run = |seconds: f64| {
        Command::new(&tools.wrk)
            .args(["-t", &WRK_THREADS.to_string(), "-c", &WRK_CONNECTIONS.to_string()])
            .args(["-d", &format!("{}s", seconds.max(1.0).round() as u64), "--latency", "-s"])
            .arg(dir.join("post.lua"))
            .arg(&url)
            .output()
            .expect("running wrk")
    };
    let _warm = run(1.0);
    let out = run(seconds);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let _ = std::fs::remove_dir_all(&dir);
    parse_wrk(&text).unwrap_or_else(|| panic!("wrk's output not understood:\n{text}"))
}

/// wrk's `Requests/sec`, its `50%` and `99%` latencies, and its non-2xx count.
fn parse_wrk(text: &str) -> Option<Figures> {
    let number = |prefix: &str| -> Option<f64> {
        text.lines().find_map(|l| l.trim().strip_prefix(prefix).and_then(|v| v.split_whitespace().next()?.parse().ok()))
    };
    let latency_ms = |q: &str| {
        text.lines().find_map(|l| {
            let l = l.trim();
            let v = l.strip_prefix(q)?.trim();
            let (digits, unit): (String, String) = v.chars().partition(|c| c.is_ascii_digit() || *c == '.');
            let n: f64 = digits.parse().ok()?;
            Some(match unit.as_str() {
                "us" => n / 1000.0,
                "ms" => n,
                "s" => n * 1000.0,
                _ => return None,
            })
        })
    };
    let per_second: f64 = number("Requests/sec:")?;
    let errors = number("Non-2xx or 3xx responses:").unwrap_or(0.0) as u64;
    Some(Figures::rate(per_second, errors, latency_ms("50%")?, latency_ms("99%")?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_wrk() {
        let out =
            "  Latency Distribution\n     50%  199.00us\n     99%    1.29ms\n  1 requests\nRequests/sec: 127367.67\n";
        let f = super::parse_wrk(out).unwrap();
        assert!((f.per_second() - 127367.67).abs() < 0.01 && (f.p50_ms - 0.199).abs() < 1e-9);
    }
}

//! A TCP proxy of our own between coffer and a real S3 server that injects faults per
//! connection: a connection cut in the middle of a request (a dropped upload), or an answer
//! the proxy makes itself (503 SlowDown, 500 InternalError) before closing.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What the proxy does to one connection.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Passes everything through.
    None,
    /// Passes this many bytes of the request through, then cuts both sides.
    Cut(usize),
    /// Answers with this status and S3 error code itself, then closes.
    Answer(u16, &'static str),
    /// Passes the requests through, and this many bytes of the answers back, then cuts both
    /// sides (a download broken off mid-body).
    CutAnswer(usize),
}

pub struct FaultProxy {
    pub port: u16,
    faults: Arc<AtomicUsize>,
    /// Answers actually cut (`CutAnswer`).
    cut_answers: Arc<AtomicUsize>,
}

impl FaultProxy {
    /// Listens on loopback and forwards to `upstream`; connection `n` (from 0) gets
    /// `plan(n)`.
    pub fn start(
        upstream: u16,
        plan: impl Fn(usize) -> Fault + Send + Sync + 'static,
    ) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let faults = Arc::new(AtomicUsize::new(0));
        let cut_answers = Arc::new(AtomicUsize::new(0));
        let counted = faults.clone();
        let cuts = cut_answers.clone();
        std::thread::spawn(move || {
            for (n, client) in listener.incoming().enumerate() {
                let Ok(client) = client else { continue };
                let fault = plan(n);
                if !matches!(fault, Fault::None) {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
                let cuts = cuts.clone();
                std::thread::spawn(move || serve(client, upstream, fault, &cuts));
            }
        });
        FaultProxy {
            port,
            faults,
            cut_answers,
        }
    }

    /// How many answers were cut mid-way.
    pub fn cut_answers(&self) -> usize {
        self.cut_answers.load(Ordering::SeqCst)
    }

    /// How many connections got a fault.
    pub fn faults(&self) -> usize {
        self.faults.load(Ordering::SeqCst)
    }
}

fn serve(mut client: TcpStream, upstream: u16, fault: Fault, cuts: &Arc<AtomicUsize>) {
    match fault {
        Fault::Answer(status, code) => {
            // Read the request's head (and whatever came with it), then answer.
            let mut buf = [0u8; 16 << 10];
            let _ = client.read(&mut buf);
            let body = format!("<Error><Code>{code}</Code><Message>injected</Message></Error>");
            let _ = write!(
                client,
                "HTTP/1.1 {status} Injected\r\nContent-Type: application/xml\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = client.shutdown(Shutdown::Both);
        }
        Fault::None | Fault::Cut(_) | Fault::CutAnswer(_) => {
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                return;
            };
            let limit = match fault {
                Fault::Cut(n) => Some(n),
                _ => None,
            };
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let answer_limit = match fault {
                Fault::CutAnswer(n) => Some(n),
                _ => None,
            };
            let cuts = cuts.clone();
            let back = std::thread::spawn(move || {
                if pass(&mut s2, &mut c2, answer_limit) {
                    cuts.fetch_add(1, Ordering::SeqCst);
                } else {
                    let _ = c2.shutdown(Shutdown::Write);
                }
            });
            let (mut client, mut server) = (client, server);
            if !pass(&mut client, &mut server, limit) {
                let _ = server.shutdown(Shutdown::Write);
            }
            let _ = back.join();
        }
    }
}

/// Copies `from` to `to` until `from` ends, or until `limit` bytes went through: then cuts
/// both connections and returns true.
fn pass(from: &mut TcpStream, to: &mut TcpStream, limit: Option<usize>) -> bool {
    let mut passed = 0usize;
    let mut buf = [0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        if let Some(l) = limit
            && passed + n >= l
        {
            let _ = to.write_all(&buf[..l - passed]);
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
            return true;
        }
        if to.write_all(&buf[..n]).is_err() {
            return false;
        }
        passed += n;
    }
}

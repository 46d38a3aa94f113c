//! A TCP proxy between the programs and the broker that breaks produce requests on purpose.
//!
//! For a chosen produce request it cuts the connection at one of two moments, alternately:
//! before forwarding it (the batch never reaches the broker), or after the broker has
//! answered it (the batch is written, and the answer is lost). Other requests pass untouched.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::{Decodable, decode_request_header_from_buffer};

#[derive(Debug, Default)]
pub struct Cuts {
    /// Connections cut with a produce request not forwarded.
    pub before_broker: AtomicUsize,
    /// Connections cut after the broker answered a produce request, the answer dropped.
    pub after_write: AtomicUsize,
}

struct Plan {
    rng: fastrand::Rng,
    chance: f64,
    left: usize,
    next_after_write: bool,
}

pub struct FaultProxy {
    pub port: u16,
    pub cuts: Arc<Cuts>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Listens on `port` and forwards to the broker on `upstream`; cuts each produce request
    /// with probability `chance`, at most `max_cuts` times in all.
    pub fn start(port: u16, upstream: u16, chance: f64, max_cuts: usize, seed: u64) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("proxy port");
        let cuts = Arc::new(Cuts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let plan = Arc::new(Mutex::new(Plan {
            rng: fastrand::Rng::with_seed(seed),
            chance,
            left: max_cuts,
            next_after_write: true,
        }));
        let accept = {
            let (cuts, stop) = (cuts.clone(), stop.clone());
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let Ok(broker) = TcpStream::connect(("127.0.0.1", upstream)) else {
                        continue;
                    };
                    relay(client, broker, plan.clone(), cuts.clone());
                }
            })
        };
        Self {
            port,
            cuts,
            stop,
            accept: Some(accept),
        }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn counts(&self) -> (usize, usize) {
        (
            self.cuts.before_broker.load(Ordering::SeqCst),
            self.cuts.after_write.load(Ordering::SeqCst),
        )
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn cut(a: &TcpStream, b: &TcpStream) {
    let _ = a.shutdown(Shutdown::Both);
    let _ = b.shutdown(Shutdown::Both);
}

fn read_frame(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).ok()?;
    let mut frame = vec![0u8; i32::from_be_bytes(length).max(0) as usize];
    stream.read_exact(&mut frame).ok()?;
    let mut whole = length.to_vec();
    whole.extend_from_slice(&frame);
    Some(whole)
}

/// Two threads per connection: requests one way, responses the other.
fn relay(client: TcpStream, broker: TcpStream, plan: Arc<Mutex<Plan>>, cuts: Arc<Cuts>) {
    let doomed: Arc<Mutex<HashSet<i32>>> = Arc::default();
    let (mut client_in, mut broker_out) =
        (client.try_clone().unwrap(), broker.try_clone().unwrap());
    let (requests_client, requests_broker) =
        (client.try_clone().unwrap(), broker.try_clone().unwrap());
    {
        let (doomed, cuts) = (doomed.clone(), cuts.clone());
        std::thread::spawn(move || {
            while let Some(frame) = read_frame(&mut client_in) {
                let header =
                    decode_request_header_from_buffer(&mut Bytes::copy_from_slice(&frame[4..]));
                let Ok(header) = header else { break };
                if header.request_api_key == ApiKey::Produce as i16 {
                    let mut plan = plan.lock().unwrap();
                    if plan.left > 0 && plan.rng.f64() < plan.chance {
                        plan.left -= 1;
                        plan.next_after_write = !plan.next_after_write;
                        if plan.next_after_write {
                            doomed.lock().unwrap().insert(header.correlation_id);
                        } else {
                            cuts.before_broker.fetch_add(1, Ordering::SeqCst);
                            cut(&requests_client, &requests_broker);
                            break;
                        }
                    }
                }
                if broker_out.write_all(&frame).is_err() {
                    break;
                }
            }
            cut(&requests_client, &requests_broker);
        });
    }
    let (mut broker_in, mut client_out) = (broker, client);
    std::thread::spawn(move || {
        while let Some(frame) = read_frame(&mut broker_in) {
            let correlation_id =
                ResponseHeader::decode(&mut Bytes::copy_from_slice(&frame[4..]), 0)
                    .map(|h| h.correlation_id)
                    .unwrap_or(-1);
            if doomed.lock().unwrap().remove(&correlation_id) {
                cuts.after_write.fetch_add(1, Ordering::SeqCst);
                break;
            }
            if client_out.write_all(&frame).is_err() {
                break;
            }
        }
        cut(&broker_in, &client_out);
    });
}

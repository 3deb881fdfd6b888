//! Ingress end to end: calls accepted over HTTP execute on every replica, and a replica
//! whose store was wiped syncs the state from its peers and certifies the same.

mod common;

use std::time::Duration;

use thicket_types::Height;
use tokio::net::TcpListener;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_executes_everywhere_and_a_wiped_replica_syncs_its_state() {
    let Setup {
        secrets,
        genesis,
        dirs,
        addrs,
        listeners,
    } = setup(4).await;
    let mut replicas = Vec::new();
    let mut urls = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let (r, url) =
            start_with_http(secrets[i].clone(), &genesis, l, vec![], dirs[i].path()).await;
        replicas.push(Some(r));
        urls.push(url);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Enough messages that each remembered status makes the state larger than one chunk.
    let http = reqwest::Client::new();
    let expiry = (thicket_replica::clock::now_ms() + 240_000) * 1_000_000;
    let canisters: Vec<Vec<u8>> = (0..10u8)
        .map(|c| vec![0, 0, 0, 0, 0, 0, 0, c, 1, 1])
        .collect();
    let mut ids = Vec::new();
    const N: u64 = 5_000;
    for batch in 0..(N / 100) {
        let mut posts = tokio::task::JoinSet::new();
        for k in 0..100 {
            let n = batch * 100 + k;
            let canister = &canisters[(n % 10) as usize];
            let (body, id) = call_envelope(canister, n, expiry);
            ids.push(id);
            let text = ic_principal::Principal::from_slice(canister).to_text();
            let url = format!("{}/api/v2/canister/{text}/call", urls[(n % 4) as usize]);
            let post = http
                .post(url)
                .header("content-type", "application/cbor")
                .body(body);
            posts.spawn(post.send());
        }
        for r in posts.join_all().await {
            assert_eq!(r.expect("posted").status(), reqwest::StatusCode::ACCEPTED);
        }
    }
    // A malformed body is refused with a reason and changes nothing.
    let text = ic_principal::Principal::from_slice(&canisters[0]).to_text();
    let r = http
        .post(format!("{}/api/v2/canister/{text}/call", urls[0]))
        .body(b"not cbor".to_vec())
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), reqwest::StatusCode::BAD_REQUEST);
    assert!(r.text().await.expect("body").contains("CBOR"));

    // Every replica executes every message, at the same height.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    for id in [&ids[0], &ids[ids.len() / 2], &ids[ids.len() - 1]] {
        let mut heights = Vec::new();
        for url in &urls {
            loop {
                let s = request_status(&http, url, id).await;
                // No canister has these ids: each call is rejected, once, in block order.
                if s["status"] == "rejected" {
                    heights.push(s["height"].as_u64().expect("height"));
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{id} not executed: {s}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        assert!(heights.windows(2).all(|w| w[0] == w[1]), "{heights:?}");
    }
    // ... each of them exactly once.
    loop {
        let executed: Vec<u64> = replicas
            .iter()
            .flatten()
            .map(|r| metric(r, "thicket_ingress_executed_total"))
            .collect();
        if executed.iter().all(|e| *e == N) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline && executed.iter().all(|e| *e <= N),
            "executed {executed:?} of {N}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Every replica certifies its state with the subnet key: a certificate for a request's
    // status verifies as an IC client checks it, and shows the status.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for r in replicas.iter().flatten() {
        let rid = hex::decode(&ids[0]).expect("hex request id");
        // The newest certified state that has executed the request.
        let certified = loop {
            let got = r.shared.certified.read().ok().and_then(|c| c.clone());
            if let Some(c) = got.filter(|c| c.tree.contains(&[b"request_status", &rid])) {
                break c;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the request is not certified"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let path = vec![b"request_status".to_vec(), rid.clone()];
        let bytes = certified.certificate(&[path]);
        let cert: ciborium::Value = ciborium::from_reader(&bytes[..]).expect("a CBOR certificate");
        let field = |name: &str| {
            let ciborium::Value::Tag(55799, inner) = &cert else {
                panic!("self-describing CBOR expected");
            };
            inner
                .as_map()
                .and_then(|m| m.iter().find(|(k, _)| k.as_text() == Some(name)))
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("no {name}"))
        };
        let tree = field("tree");
        let msg = [&b"\x0Dic-state-root"[..], &reconstruct(&tree)].concat();
        let sig = field("signature").into_bytes().expect("signature bytes");
        let sig = thicket_crypto::threshold::CombinedSig::from_bytes(&sig).expect("48 bytes");
        let key = thicket_crypto::threshold::PublicKey::from_der(&certified.subnet.public_key_der)
            .expect("root key");
        thicket_crypto::threshold::verify_combined(&sig, &msg, &key).expect("the subnet signed it");
        assert_eq!(
            lookup(&tree, &[b"request_status", &rid, b"status"]),
            Some(b"rejected".to_vec())
        );
        assert!(lookup(&tree, &[b"time"]).is_some());
    }

    // Wipe replica 3: stop it and give it an empty data directory.
    stop(replicas[3].take().expect("running")).await;
    let fresh = tempfile::tempdir().expect("tempdir");
    tokio::time::sleep(Duration::from_secs(8)).await;
    let l = TcpListener::bind(addrs[3].trim_start_matches("http://"))
        .await
        .expect("rebinds");
    replicas[3] = Some(start(secrets[3].clone(), &genesis, l, vec![], fresh.path()).await);
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    let r3 = replicas[3].as_ref().expect("running");
    while metric(r3, "thicket_state_syncs_total") == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no state sync:\n{}",
            r3.shared.metrics.encode()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        metric(r3, "thicket_state_sync_chunks_total") >= 2,
        "the state should span several chunks:\n{}",
        r3.shared.metrics.encode()
    );
    // It executes on from the synced state, through at least one more checkpoint.
    tokio::time::sleep(Duration::from_secs(8)).await;

    let mut drivers = Vec::new();
    for r in replicas.into_iter().flatten() {
        drivers.push(stop(r).await);
    }
    use thicket_consensus::StateReader;
    let synced = &drivers[3];
    let common: Vec<Height> = (0..=synced.state().executed_height().0)
        .map(Height)
        .filter(|h| {
            synced.state().state_hash(*h).is_some() && drivers[0].state().state_hash(*h).is_some()
        })
        .collect();
    assert!(!common.is_empty(), "no checkpoint height in common");
    for h in common {
        assert_eq!(
            synced.state().state_hash(h),
            drivers[0].state().state_hash(h),
            "state differs at {h}"
        );
    }
    assert!(synced.pool().finalized_height() > Height(30));
}

/// A TCP connection to `addr` from local address `from`.
async fn connect_from(from: &str, addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{from}:0").parse().expect("address"))
        .expect("binds");
    socket.connect(addr).await.expect("connects")
}

/// How long until the server closes `conn` (reading and dropping what it sends), at most
/// `within`; `None` if it is still open then.
async fn closed_within(conn: &mut tokio::net::TcpStream, within: Duration) -> Option<Duration> {
    use tokio::io::AsyncReadExt;
    let started = tokio::time::Instant::now();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_port_bounds_connections_and_their_time_whatever_clients_send() {
    use tokio::io::AsyncWriteExt;
    let Setup {
        secrets,
        genesis,
        dirs,
        mut listeners,
        ..
    } = setup(21).await;
    let limits = thicket_replica::http::server::Limits {
        max_connections: 40,
        max_per_source: 30,
        header_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(3),
        ..Default::default()
    };
    let http = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = http.local_addr().expect("addr");
    let url = format!("http://{addr}");
    // One replica alone: its HTTP port serves whether or not the subnet makes progress.
    let replica = thicket_replica::node::start_with(
        secrets[0].clone(),
        &genesis,
        dirs[0].path(),
        listeners.remove(0),
        http,
        &[],
        thicket_replica::node::Options {
            http_limits: limits,
            ..Default::default()
        },
    )
    .await
    .expect("starts");

    // Half a header from 30 connections of one address and 15 of another: 30 of the first
    // and 10 of the second are held (40 in all), the others closed at once; the held ones go
    // once the header timeout passes.
    let mut held = Vec::new();
    for from in std::iter::repeat_n("127.0.0.1", 35).chain(std::iter::repeat_n("127.0.0.2", 15)) {
        let mut c = connect_from(from, addr).await;
        let _ = c
            .write_all(b"GET /api/v2/status HTTP/1.1\r\nHost: x\r\n")
            .await;
        held.push(c);
    }
    let mut watching = tokio::task::JoinSet::new();
    for mut c in held {
        watching.spawn(async move { closed_within(&mut c, Duration::from_secs(5)).await });
    }
    let closes = watching.join_all().await;
    let refused = closes
        .iter()
        .filter(|d| d.is_some_and(|d| d < Duration::from_millis(500)))
        .count();
    assert_eq!(
        refused, 10,
        "5 over the per-source limit, 5 over the total: {closes:?}"
    );
    assert!(
        closes.iter().all(Option::is_some),
        "every half header is dropped after the header timeout: {closes:?}"
    );

    // The port serves again; what it refused is counted.
    let client = reqwest::Client::new();
    let metrics = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("answered")
        .text()
        .await
        .expect("text");
    for reason in ["per_source", "total"] {
        assert!(
            metrics.contains(&format!(
                "http_connections_refused_total{{reason=\"{reason}\"}} 5"
            )),
            "{reason}: {metrics}"
        );
    }

    // A body declaring more than a request may carry is refused before it is read.
    let mut c = connect_from("127.0.0.1", addr).await;
    c.write_all(
        b"POST /api/v2/canister/aaaaa-aa/call HTTP/1.1\r\nHost: x\r\n\
          Content-Type: application/cbor\r\nContent-Length: 1000000000000000000\r\n\r\n",
    )
    .await
    .expect("writes");
    let answer = read_answer(&mut c).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // A body that stops coming: the request ends with a 408 at the request timeout.
    let mut c = connect_from("127.0.0.1", addr).await;
    let started = tokio::time::Instant::now();
    c.write_all(
        b"POST /api/v2/canister/aaaaa-aa/call HTTP/1.1\r\nHost: x\r\n\
          Content-Type: application/cbor\r\nContent-Length: 100\r\n\r\n0123456789",
    )
    .await
    .expect("writes");
    let answer = read_answer(&mut c).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(4));

    // An HTTP/2 connection that only says hello is closed once idle.
    let mut c = connect_from("127.0.0.1", addr).await;
    c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .expect("writes");
    let idle = closed_within(&mut c, Duration::from_secs(10)).await;
    assert!(
        idle.is_some_and(|d| d >= Duration::from_secs(2)),
        "closed after the idle timeout: {idle:?}"
    );

    // Through it all, a well-behaved client is served.
    let status = client
        .get(format!("{url}/api/v2/status"))
        .send()
        .await
        .expect("answered");
    assert_eq!(status.status(), reqwest::StatusCode::OK);
    replica.stop().await.expect("stops");
}

/// What the server answers on `c` until it closes it (or 5 s pass), as text.
async fn read_answer(c: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_refuses_a_store_that_lost_data_and_names_the_command_that_recovers() {
    let Setup {
        secrets,
        genesis,
        dirs,
        mut listeners,
        ..
    } = setup(23).await;
    let dir = dirs[0].path();
    let grpc = listeners.remove(0);
    let grpc_addr = grpc.local_addr().expect("addr");
    let replica = start(secrets[0].clone(), &genesis, grpc, vec![], dir).await;
    replica.stop().await.expect("stops");
    // The store's seal says it reached height 50: its files hold less, as when sled ends a
    // damaged log early.
    std::fs::write(dir.join("store.seal"), 50u64.to_be_bytes()).expect("writes");
    let again = || async {
        let grpc = TcpListener::bind(grpc_addr).await.expect("binds again");
        let http = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        thicket_replica::node::start(secrets[0].clone(), &genesis, dir, grpc, http, &[]).await
    };
    let err = match again().await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a store that lost data is refused"),
    };
    assert!(err.contains("but it reached 50"), "{err}");
    assert!(
        err.contains(&format!(
            "`thicket replica reset-store --data-dir {}`",
            dir.display()
        )),
        "{err}"
    );
    // The command moves the store aside; the replica starts again (and would rejoin from
    // its peers).
    let aside = thicket_replica::node::reset_store(dir).expect("moved");
    let seal_aside = format!("{}.seal", aside.display());
    assert!(aside.join("db").exists() && std::path::Path::new(&seal_aside).exists());
    assert!(!dir.join("store").exists() && !dir.join("store.seal").exists());
    let replica = again().await.expect("starts on a fresh store");
    replica.stop().await.expect("stops");
}

/// An anonymous query envelope for `method` of canister `id`.
fn query_envelope(id: &[u8], method: &str, expiry_ns: u64) -> Vec<u8> {
    use ciborium::Value::{Bytes, Integer, Text};
    let content = vec![
        (Text("request_type".into()), Text("query".into())),
        (Text("sender".into()), Bytes(vec![4])),
        (Text("canister_id".into()), Bytes(id.to_vec())),
        (Text("method_name".into()), Text(method.into())),
        (Text("arg".into()), Bytes(b"DIDL\x00\x00".to_vec())),
        (Text("ingress_expiry".into()), Integer(expiry_ns.into())),
    ];
    thicket_replica::http::envelope::wrap(content)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_queries_runs_a_bounded_number_at_once_and_the_excess_is_refused() {
    let Setup {
        secrets,
        genesis,
        dirs,
        listeners,
        ..
    } = setup(24).await;
    let limits = thicket_replica::http::server::Limits {
        max_queries: 2,
        max_waiting_queries: 8,
        ..Default::default()
    };
    let mut replicas = Vec::new();
    let mut url = String::new();
    for (i, grpc) in listeners.into_iter().enumerate() {
        let http = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        if i == 0 {
            url = format!("http://{}", http.local_addr().expect("addr"));
        }
        let options = thicket_replica::node::Options {
            admin_on_http: true,
            http_limits: if i == 0 { limits } else { Default::default() },
            ..Default::default()
        };
        let r = thicket_replica::node::start_with(
            secrets[i].clone(),
            &genesis,
            dirs[i].path(),
            grpc,
            http,
            &[],
            options,
        )
        .await
        .expect("starts");
        replicas.push(r);
    }
    let client = reqwest::Client::new();
    let canister = [0u8, 0, 0, 0, 0, 0, 0, 9, 1, 1];
    let text = ic_principal::Principal::from_slice(&canister).to_text();
    let post = |client: reqwest::Client| {
        let url = format!("{url}/api/v2/canister/{text}/query");
        async move {
            let expiry = (thicket_replica::clock::now_ms() + 60_000) * 1_000_000;
            let r = client
                .post(url)
                .header("content-type", "application/cbor")
                .body(query_envelope(&canister, "get", expiry))
                .send()
                .await
                .expect("answered");
            let status = r.status();
            let body: ciborium::Value =
                ciborium::from_reader(&r.bytes().await.expect("body")[..]).expect("CBOR");
            let body = match body {
                ciborium::Value::Tag(_, inner) => *inner,
                other => other,
            };
            let field = |name: &str| {
                body.as_map()
                    .and_then(|m| m.iter().find(|(k, _)| k.as_text() == Some(name)))
                    .map(|(_, v)| v.clone())
            };
            let code = field("error_code").and_then(|v| v.as_text().map(str::to_string));
            (status, code)
        }
    };
    // Once the subnet certified a state, queries run: this canister does not exist.
    eventually("a certified state", Duration::from_secs(60), || async {
        match post(client.clone()).await {
            (reqwest::StatusCode::OK, Some(code)) if code == "IC0301" => Ok(()),
            other => Err(other),
        }
    })
    .await;
    // 200 at once, over 25 connections: 2 run, 8 wait, the rest are told to retry.
    let mut burst = tokio::task::JoinSet::new();
    let clients: Vec<reqwest::Client> = (0..25).map(|_| reqwest::Client::new()).collect();
    for i in 0..200 {
        burst.spawn(post(clients[i % 25].clone()));
    }
    let answers = burst.join_all().await;
    let busy = answers
        .iter()
        .filter(|(s, c)| *s == reqwest::StatusCode::OK && c.as_deref() == Some("IC0201"))
        .count();
    let ran = answers
        .iter()
        .filter(|(s, c)| *s == reqwest::StatusCode::OK && c.as_deref() == Some("IC0301"))
        .count();
    assert_eq!(busy + ran, 200, "every query answered: {answers:?}");
    assert!(busy > 0 && ran >= 10, "{busy} refused, {ran} ran");
    assert_eq!(
        metric(&replicas[0], "thicket_queries_refused_busy_total"),
        busy as u64
    );
    // After the burst, queries run again.
    assert_eq!(post(client.clone()).await.1.as_deref(), Some("IC0301"));
    stop_all_and_compare(replicas).await;
}

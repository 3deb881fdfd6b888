// A website served by a canister through the HTTP gateway, with certified assets (response
// certification version 1): the canister certifies the SHA-256 of each page under
// `http_assets/<path>` of its certified data, and answers each page with the certificate and
// the hash tree that proves it, so a gateway checks every byte against the subnet's key.
//
// - `/` and `/index.html`: the HTML page;
// - `/big.txt`: a text too large for one reply chunk, sent in parts through a streaming
//   callback (the certified hash covers the whole of it);
// - `/tampered`: a page whose body is not the one the canister certified (what a gateway
//   must refuse);
// - `/v2.html`: the page under response certification version 2 (the certificate expression
//   says which headers are certified with the status and body: here `content-type`);
// - `/visits`: answered by `http_request_update` (the query asks for the upgrade), which
//   counts the visits in replicated state.
import Base64 "mo:core/Base64";
import Blob "mo:core/Blob";
import CertifiedData "mo:core/CertifiedData";
import Nat "mo:core/Nat";
import Nat8 "mo:core/Nat8";
import Text "mo:core/Text";
import Array "mo:core/Array";
import Sha256 "Sha256";

persistent actor Website {
  type HeaderField = (Text, Text);
  type HttpRequest = {
    method : Text;
    url : Text;
    headers : [HeaderField];
    body : Blob;
    certificate_version : ?Nat16;
  };
  type HttpUpdateRequest = {
    method : Text;
    url : Text;
    headers : [HeaderField];
    body : Blob;
  };
  type Token = { index : Nat };
  type StreamingCallbackHttpResponse = { body : Blob; token : ?Token };
  type StreamingStrategy = {
    #Callback : {
      callback : shared query Token -> async StreamingCallbackHttpResponse;
      token : Token;
    };
  };
  type HttpResponse = {
    status_code : Nat16;
    headers : [HeaderField];
    body : Blob;
    streaming_strategy : ?StreamingStrategy;
    upgrade : ?Bool;
  };

  transient let page : Blob = Text.encodeUtf8(
    "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Thicket</title></head>" #
    "<body><h1 id=\"greeting\">Hello from a canister on Thicket</h1>" #
    "<p>Every byte of this page was checked against the subnet's key.</p></body></html>"
  );
  // 5 parts of 64 KiB and a little more.
  transient let part = 65536;
  transient let big : Blob = do {
    let line = Blob.toArray(Text.encodeUtf8("certified, streamed, and whole: 0123456789abcdef\n"));
    Blob.fromArray(Array.tabulate<Nat8>(5 * part + 1000, func(i) = line[i % line.size()]));
  };
  transient let tamperedCertified : Blob = Text.encodeUtf8("the page the canister certified");
  transient let tamperedServed : Blob = Text.encodeUtf8("a page nobody certified");
  var visits : Nat = 0;

  // The hash tree: labeled "http_assets" over the pages' hashes, labels in order.
  type Tree = { #fork : (Tree, Tree); #labeled : (Blob, Tree); #leaf : Blob };

  func h(parts : [Blob]) : Blob {
    Sha256.sha256(Blob.fromArray(Array.flatten<Nat8>(Array.map<Blob, [Nat8]>(parts, Blob.toArray))));
  };
  func sep(s : Text) : Blob {
    let b = Text.encodeUtf8(s);
    Blob.fromArray(Array.concat<Nat8>([Nat8.fromNat(b.size())], Blob.toArray(b)));
  };
  func digest(t : Tree) : Blob {
    switch t {
      case (#fork(l, r)) h([sep("ic-hashtree-fork"), digest(l), digest(r)]);
      case (#labeled(l, t)) h([sep("ic-hashtree-labeled"), l, digest(t)]);
      case (#leaf(v)) h([sep("ic-hashtree-leaf"), v]);
    };
  };

  // CBOR: [1, l, r], [2, label, t], [3, value], behind the self-describing tag.
  func head(major : Nat, n : Nat) : [Nat8] {
    let m = major * 32;
    if (n < 24) { [Nat8.fromNat(m + n)] } else if (n < 256) { [Nat8.fromNat(m + 24), Nat8.fromNat(n)] } else if (
      n < 65536
    ) { [Nat8.fromNat(m + 25), Nat8.fromNat(n / 256), Nat8.fromNat(n % 256)] } else {
      [
        Nat8.fromNat(m + 26),
        Nat8.fromNat(n / 16777216 % 256),
        Nat8.fromNat(n / 65536 % 256),
        Nat8.fromNat(n / 256 % 256),
        Nat8.fromNat(n % 256),
      ];
    };
  };
  func bytes(b : Blob) : [Nat8] = Array.concat<Nat8>(head(2, b.size()), Blob.toArray(b));
  func cbor(t : Tree) : [Nat8] {
    switch t {
      case (#fork(l, r)) Array.flatten<Nat8>([head(4, 3), [1], cbor(l), cbor(r)]);
      case (#labeled(l, t)) Array.flatten<Nat8>([head(4, 3), [2], bytes(l), cbor(t)]);
      case (#leaf(v)) Array.flatten<Nat8>([head(4, 2), [3], bytes(v)]);
    };
  };

  func asset(path : Text, body : Blob) : Tree = #labeled(Text.encodeUtf8(path), #leaf(Sha256.sha256(body)));

  // Version 2: `http_expr/v2.html/<$>/<expression hash>/""/<response hash>` is a leaf "".
  transient let expression = "default_certification(ValidationArgs{certification:Certification{" #
  "no_request_certification:Empty{},response_certification:ResponseCertification{" #
  "certified_response_headers:ResponseHeaderList{headers:[\"content-type\"]}}}})";
  transient let v2Type = "text/html; charset=utf-8";

  // The representation-independent hash of a map of text (or, for the status, number) values.
  func mapHash(entries : [(Text, Blob)]) : Blob {
    let pairs = Array.map<(Text, Blob), Blob>(
      entries,
      func((k, v)) = Blob.fromArray(Array.concat<Nat8>(Blob.toArray(Sha256.sha256(Text.encodeUtf8(k))), Blob.toArray(Sha256.sha256(v)))),
    );
    h(Array.sort<Blob>(pairs, Blob.compare));
  };
  func leb128(n : Nat) : Blob {
    var rest = n;
    var out : [Nat8] = [];
    loop {
      let low = rest % 128;
      rest /= 128;
      out := Array.concat<Nat8>(out, [Nat8.fromNat(if (rest > 0) low + 128 else low)]);
      if (rest == 0) return Blob.fromArray(out);
    };
  };
  transient let v2ResponseHash : Blob = h([
    mapHash([
      ("content-type", Text.encodeUtf8(v2Type)),
      ("ic-certificateexpression", Text.encodeUtf8(expression)),
      (":ic-cert-status", leb128(200)),
    ]),
    Sha256.sha256(page),
  ]);

  transient let tree : Tree = #fork(
    #labeled(
      Text.encodeUtf8("http_assets"),
      #fork(
        #fork(asset("/", page), asset("/big.txt", big)),
        #fork(asset("/index.html", page), asset("/tampered", tamperedCertified)),
      ),
    ),
    #labeled(
      Text.encodeUtf8("http_expr"),
      #labeled(
        Text.encodeUtf8("v2.html"),
        #labeled(
          Text.encodeUtf8("<$>"),
          #labeled(
            Sha256.sha256(Text.encodeUtf8(expression)),
            #labeled(Text.encodeUtf8(""), #labeled(v2ResponseHash, #leaf(Text.encodeUtf8("")))),
          ),
        ),
      ),
    ),
  );
  // The CBOR array of the expression path's labels (text strings).
  transient let exprPath : Blob = Blob.fromArray(
    Array.flatten<Nat8>([
      head(4, 3),
      Array.concat<Nat8>(head(3, 9), Blob.toArray(Text.encodeUtf8("http_expr"))),
      Array.concat<Nat8>(head(3, 7), Blob.toArray(Text.encodeUtf8("v2.html"))),
      Array.concat<Nat8>(head(3, 3), Blob.toArray(Text.encodeUtf8("<$>"))),
    ])
  );
  transient let treeCbor : Blob = Blob.fromArray(Array.concat<Nat8>([0xd9, 0xd9, 0xf7], cbor(tree)));

  // The certified data is the tree's root hash: set at install and after each upgrade (the
  // tree is rebuilt from the code, so it is never stale).
  CertifiedData.set(digest(tree));

  func certificateHeader(version : Nat) : HeaderField {
    let certificate = switch (CertifiedData.getCertificate()) {
      case (?c) c;
      case null Blob.fromArray([]);
    };
    let v1 = "certificate=:" # Base64.encode(certificate) # ":, tree=:" # Base64.encode(treeCbor) # ":";
    (
      "IC-Certificate",
      if (version == 2) v1 # ", version=2, expr_path=:" # Base64.encode(exprPath) # ":" else v1,
    );
  };

  func path(url : Text) : Text {
    switch (Text.split(url, #char '?').next()) {
      case (?p) p;
      case null url;
    };
  };

  func respond(status : Nat16, contentType : Text, body : Blob, stream : ?StreamingStrategy) : HttpResponse {
    {
      status_code = status;
      headers = [("Content-Type", contentType), certificateHeader(1)];
      body;
      streaming_strategy = stream;
      upgrade = null;
    };
  };

  func slice(index : Nat) : Blob {
    let all = Blob.toArray(big);
    let start = index * part;
    let end = Nat.min(start + part, all.size());
    Blob.fromArray(Array.sliceToArray<Nat8>(all, start, end));
  };

  public query func http_request(req : HttpRequest) : async HttpResponse {
    switch (path(req.url)) {
      case ("/" or "/index.html") respond(200, "text/html; charset=utf-8", page, null);
      case "/big.txt" {
        let more = if (big.size() > part) ?#Callback({ callback = http_streaming; token = { index = 1 } }) else null;
        respond(200, "text/plain", slice(0), more);
      };
      case "/tampered" respond(200, "text/plain", tamperedServed, null);
      case "/v2.html" {
        {
          status_code = 200;
          headers = [("content-type", v2Type), ("IC-CertificateExpression", expression), certificateHeader(2)];
          body = page;
          streaming_strategy = null;
          upgrade = null;
        };
      };
      case "/visits" {
        { status_code = 200; headers = []; body = Blob.fromArray([]); streaming_strategy = null; upgrade = ?true };
      };
      case _ {
        {
          status_code = 404;
          headers = [("Content-Type", "text/plain")];
          body = Text.encodeUtf8("not found");
          streaming_strategy = null;
          upgrade = null;
        };
      };
    };
  };

  public query func http_streaming(token : Token) : async StreamingCallbackHttpResponse {
    let next = token.index + 1;
    {
      body = slice(token.index);
      token = if (next * part < big.size()) ?{ index = next } else null;
    };
  };

  // An update: its reply is certified by the subnet, as every call's is.
  public func http_request_update(_req : HttpUpdateRequest) : async HttpResponse {
    visits += 1;
    {
      status_code = 200;
      headers = [("Content-Type", "text/plain")];
      body = Text.encodeUtf8("visits: " # Nat.toText(visits));
      streaming_strategy = null;
      upgrade = null;
    };
  };
};

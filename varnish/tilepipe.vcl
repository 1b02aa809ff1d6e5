# Varnish in front of several tilepipe render nodes (README "More than one
# machine"). Debian 12: apt install varnish varnish-modules.
#
# - Each tile request goes to one node, chosen by its metatile (8x8 tiles)
#   with consistent hashing (vmod_directors' shard director, by=KEY), so
#   each metatile is rendered and cached on one node only; a node whose
#   /health probe fails loses its share to the others (healthy=CHOSEN).
# - tilepipe answers each tile with its metatile's surrogate key in an
#   `xkey` header (style/z/x/y of the metatile's top-left tile), and sends
#   `PURGE /` with the keys of re-rendered metatiles in an `xkey` header
#   (serve.purge.varnish); vmod_xkey drops every cached tile of them.
#
# Replace the backends with your nodes (their serve.listen addresses),
# and the purgers ACL with their addresses. Varnish caches by the Cache-Control tilepipe sends
# (serve.cache, mod_tile's rules).

vcl 4.1;

import directors;
import std;
import xkey;

probe tilepipe_health {
    .url = "/health";
    .interval = 1s;
    .timeout = 1s;
    .window = 3;
    .threshold = 2;
}

# The render nodes: one line each, and one add_backend line each in
# vcl_init below.
backend node1 { .host = "127.0.0.2"; .port = "8080"; .probe = tilepipe_health; }
backend node2 { .host = "127.0.0.3"; .port = "8080"; .probe = tilepipe_health; }

# Who may purge: the render nodes.
acl purgers {
    "127.0.0.0"/8;
}

sub vcl_init {
    new tiles = directors.shard();
    tiles.add_backend(node1);
    tiles.add_backend(node2);
    tiles.reconfigure();
}

sub vcl_recv {
    if (req.method == "PURGE") {
        if (client.ip !~ purgers) {
            return (synth(403, "Forbidden"));
        }
        if (!req.http.xkey) {
            return (synth(400, "PURGE needs an xkey header"));
        }
        set req.http.n-gone = xkey.purge(req.http.xkey);
        return (synth(200, "Invalidated " + req.http.n-gone + " objects"));
    }
    # /style/z/x/y.ext: shard by style, zoom and metatile (x and y / 8),
    # the unit tilepipe renders and purges. Anything else (TileJSON, the
    # map page, /health) by URL.
    if (req.url ~ "^/[^/]+/[0-9]+/[0-9]+/[0-9]+\.[a-z]+") {
        set req.http.x-metatile = regsub(req.url, "^/([^/]+)/([0-9]+)/.*$", "\1/\2/")
            + std.integer(regsub(req.url, "^/[^/]+/[0-9]+/([0-9]+)/.*$", "\1"), 0) / 8 + "/"
            + std.integer(regsub(req.url, "^/[^/]+/[0-9]+/[0-9]+/([0-9]+).*$", "\1"), 0) / 8;
        set req.backend_hint = tiles.backend(by=KEY, key=tiles.key(req.http.x-metatile));
        unset req.http.x-metatile;
    } else {
        set req.backend_hint = tiles.backend(by=URL);
    }
    # Admin endpoints stay with the nodes' own admin_networks.
    if (req.url ~ "/(dirty|status)$" || req.url == "/metrics") {
        return (synth(403, "Forbidden"));
    }
}

sub vcl_backend_response {
    # Which node drew it, for the operator (X-Node on the response).
    set beresp.http.x-node = beresp.backend.name;
    # Errors and overload answers (503 with Retry-After) are not kept.
    if (beresp.status >= 500) {
        set beresp.ttl = 0s;
        set beresp.uncacheable = true;
    }
}

sub vcl_deliver {
    # The keys are for this cache, not for browsers.
    unset resp.http.xkey;
    unset resp.http.surrogate-key;
}

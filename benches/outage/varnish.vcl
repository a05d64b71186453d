# Varnish with grace mode in front of the demo upstream: the peer `cargo
# bench --bench outage` compares grace with (benches/README.md). It mirrors
# grace.toml beside this file: connect and first-byte timeouts equal to
# grace's route timeout (500 ms), stale copies kept for a day, the graced
# copy served when the backend fails. Varnish has no breaker: a health
# probe is the nearest thing, and it would add its own calls to the
# upstream, so there is none here.
#
# Fresh copies are kept for 1 s (grace keeps none: it calls the service for
# every request while it answers); an older copy is answered at once while
# a background fetch refreshes it.
#
# The bench fills in @UPSTREAM_HOST@ and @UPSTREAM_PORT@.

vcl 4.1;

backend api {
    .host = "@UPSTREAM_HOST@";
    .port = "@UPSTREAM_PORT@";
    .connect_timeout = 0.5s;
    .first_byte_timeout = 0.5s;
    .between_bytes_timeout = 0.5s;
}

sub vcl_backend_response {
    set beresp.ttl = 1s;
    set beresp.grace = 24h;
    # A failed refresh must not replace the graced copy.
    if (beresp.status >= 500 && bereq.is_bgfetch) {
        return (abandon);
    }
}

sub vcl_backend_error {
    # No answer at all (refused, timed out): keep the graced copy.
    if (bereq.is_bgfetch) {
        return (abandon);
    }
}

sub vcl_deliver {
    # Says, as nginx's $upstream_cache_status does, whether the answer was a
    # stale (graced) copy.
    if (obj.ttl < 0s) {
        set resp.http.X-Cache-Status = "STALE";
    } else if (obj.hits > 0) {
        set resp.http.X-Cache-Status = "HIT";
    } else {
        set resp.http.X-Cache-Status = "MISS";
    }
}

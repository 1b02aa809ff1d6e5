//! Test databases: connecting, and comparing two imports row by row.

/// Connection settings for a test database URL.
pub fn db_config(url: &str) -> postgres::Config {
    tilepipe::db::resolve(url, &tilepipe::db::ProcessEnv).unwrap()
}

/// A connection to the database at `url`, made as tilepipe makes it;
/// panics on failure.
pub fn connect(url: &str) -> postgres::Client {
    tilepipe::db::connect(&db_config(url)).unwrap()
}

/// A checksum of every row of every output and middle table: two databases
/// with equal checksums hold the same data.
pub fn checksums(client: &mut postgres::Client) -> Vec<(String, i64, String)> {
    ["point", "line", "roads", "polygon", "nodes", "ways", "rels"]
        .iter()
        .map(|t| {
            let row = client
                .query_one(
                    &format!(
                        "SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM planet_osm_{t} t"
                    ),
                    &[],
                )
                .unwrap();
            (t.to_string(), row.get(0), row.get(1))
        })
        .collect()
}

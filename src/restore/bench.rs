//! `coffer restore ID --source NAME --bench SITE --to DIR`: a frappe preset's snapshot laid
//! out as the files Frappe's own `bench --site SITE restore` takes.
//!
//! Frappe writes `<ts>-<site_>-database.sql.gz`, `<ts>-<site_>-files.tar` and
//! `<ts>-<site_>-private-files.tar` (tar members `./<site>/public/files/…` and
//! `./<site>/private/files/…`, which bench extracts with `--strip 2` inside the site folder),
//! and `<ts>-<site_>-site_config_backup.json`. The streams are verified as they are read,
//! like any restore.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use flate2::Compression;
use flate2::write::GzEncoder;

use crate::pipeline::read_ahead;
use crate::snapshot::{Bases, Manifest};
use crate::store::Store;
use crate::verify::DeepKeys;

/// The files written for bench.
#[derive(Debug)]
pub struct BenchFiles {
    pub database: PathBuf,
    pub public_files: PathBuf,
    pub private_files: PathBuf,
    pub site_config: Option<PathBuf>,
}

/// A new 0600 file (a leftover of an earlier failed run is replaced).
fn create_private(path: &Path) -> anyhow::Result<File> {
    let _ = fs::remove_file(path);
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))
}

fn partial(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// The preset name (`<name>-db`, `<name>-files`) of `site` of a frappe-bench in `m`.
///
/// # Errors
/// When `m` holds no such site: what it holds is named.
pub fn site_preset(m: &Manifest, site: &str) -> anyhow::Result<String> {
    let found = m.sources.iter().find_map(|s| {
        let b = s.bench.as_ref()?;
        (b.site.as_deref() == Some(site) && !s.kind.is_folder())
            .then(|| s.name.strip_suffix("-db"))
            .flatten()
    });
    if let Some(name) = found {
        return Ok(name.to_string());
    }
    let sites: Vec<String> = m
        .sources
        .iter()
        .filter_map(|s| {
            let b = s.bench.as_ref()?;
            Some(format!(
                "{} (frappe-bench '{}')",
                b.site.as_deref()?,
                b.bench
            ))
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if sites.is_empty() {
        bail!(
            "snapshot {} holds no frappe-bench site; for a frappe source give --source NAME \
             with --bench {site}",
            m.id
        );
    }
    bail!(
        "snapshot {} holds no site '{site}' of a frappe-bench; it holds: {}",
        m.id,
        sites.join(", ")
    )
}

/// Writes the bench files of preset `name` (sources `<name>-db`, `<name>-files`) into `dir`.
///
/// # Errors
/// When the snapshot has no such preset, a stream fails (the bad part is named), or a file
/// cannot be written.
#[allow(clippy::too_many_arguments)]
pub fn write_bench_layout(
    store: &dyn Store,
    m: &Manifest,
    bases: &Bases,
    name: &str,
    site: &str,
    dir: &Path,
    force: bool,
    keys: &DeepKeys<'_>,
) -> anyhow::Result<BenchFiles> {
    let (identities, identity_file) = (keys.identities, keys.identity_file);
    let (Ok(db), Ok(files)) = (
        m.source(&format!("{name}-db")),
        m.source(&format!("{name}-files")),
    ) else {
        bail!(
            "snapshot {} holds no frappe preset '{name}' (sources {name}-db and {name}-files); \
             it has: {}",
            m.id,
            m.sources
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    if site.is_empty() || site.contains('/') || site.starts_with('.') {
        bail!("'{site}' is not a site name (such as erp.example.com)");
    }
    // Each file is refused if it exists: the folder may hold others, but must be private.
    super::prepare_target(dir, true)?;
    let stem = format!(
        "{}-{}",
        m.created.format("%Y%m%d_%H%M%S"),
        site.replace('.', "_")
    );
    let out = BenchFiles {
        database: dir.join(format!("{stem}-database.sql.gz")),
        public_files: dir.join(format!("{stem}-files.tar")),
        private_files: dir.join(format!("{stem}-private-files.tar")),
        site_config: Some(dir.join(format!("{stem}-site_config_backup.json"))),
    };
    let finals = [
        &out.database,
        &out.public_files,
        &out.private_files,
        out.site_config.as_ref().expect("named above"),
    ];
    if !force && let Some(f) = finals.iter().find(|f| f.exists()) {
        bail!("{} exists; pass --force to replace it", f.display());
    }
    // Everything is written under *.partial names and renamed only once every stream has
    // been read and verified: a failed restore must not leave files bench would accept.
    let work = BenchFiles {
        database: partial(&out.database),
        public_files: partial(&out.public_files),
        private_files: partial(&out.private_files),
        site_config: out.site_config.as_deref().map(partial),
    };
    for (lm, ls) in super::layers(m, files, bases)? {
        super::precheck(store, lm, ls)?;
    }
    super::precheck(store, m, db)?;
    let written = write_partials(
        store,
        m,
        bases,
        db,
        files,
        site,
        &work,
        identities,
        identity_file,
    );
    let has_config = match written {
        Ok(has_config) => has_config,
        Err(e) => {
            for f in [&work.database, &work.public_files, &work.private_files]
                .into_iter()
                .chain(work.site_config.as_ref())
            {
                let _ = fs::remove_file(f);
            }
            return Err(e.context(format!(
                "nothing was left in {}: restore an older snapshot ('coffer list')",
                dir.display()
            )));
        }
    };
    let mut pairs = vec![
        (&work.database, &out.database),
        (&work.public_files, &out.public_files),
        (&work.private_files, &out.private_files),
    ];
    if has_config {
        pairs.push((
            work.site_config.as_ref().expect("named above"),
            out.site_config.as_ref().expect("named above"),
        ));
    }
    for (from, to) in pairs {
        fs::rename(from, to).with_context(|| format!("renaming {} into place", from.display()))?;
    }
    Ok(BenchFiles {
        site_config: if has_config { out.site_config } else { None },
        ..out
    })
}

/// Writes the bench files under the names in `out`; returns whether a site config was found.
#[allow(clippy::too_many_arguments)]
fn write_partials(
    store: &dyn Store,
    m: &Manifest,
    bases: &Bases,
    db: &crate::snapshot::SourceRecord,
    files: &crate::snapshot::SourceRecord,
    site: &str,
    out: &BenchFiles,
    identities: &[Box<dyn age::Identity + Send + Sync>],
    identity_file: &str,
) -> anyhow::Result<bool> {
    // The database: the dump, gzip'd as bench expects.
    let stream = super::open_checked(store, m, db, identities, identity_file)?;
    let mut gz = GzEncoder::new(create_private(&out.database)?, Compression::new(6));
    std::thread::scope(|scope| io::copy(&mut read_ahead(scope, stream), &mut gz))
        .with_context(|| format!("restoring {} from snapshot {}", db.name, m.id))?;
    gz.finish()
        .and_then(|f| f.sync_all())
        .with_context(|| format!("writing {}", out.database.display()))?;

    // The files: one archive split into bench's two, plus site_config.json.
    let mut public = tar::Builder::new(create_private(&out.public_files)?);
    let mut private = tar::Builder::new(create_private(&out.private_files)?);
    let mut site_config = None;
    if files.differential.is_some() {
        // A differential needs its full restored first: the tree is put together in a
        // private folder beside the bench files, then split, then removed.
        let tree = partial(&out.public_files.with_extension("tree"));
        let _ = fs::remove_dir_all(&tree);
        super::create_private_dir(&tree)?;
        let split = super::restore_one(store, m, files, bases, &tree, identities, identity_file)
            .and_then(|_| {
                for (sub, builder) in [
                    ("public/files", &mut public),
                    ("private/files", &mut private),
                ] {
                    append_tree(builder, &tree, Path::new(sub), site)?;
                }
                match fs::read(tree.join("site_config.json")) {
                    Ok(json) => site_config = Some(json),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(anyhow::anyhow!(e).context("reading site_config.json")),
                }
                Ok(())
            });
        let _ = fs::remove_dir_all(&tree);
        split?;
        return finish_files(public, private, site_config, out);
    }
    let stream = super::open_checked(store, m, files, identities, identity_file)?;
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let mut archive = tar::Archive::new(read_ahead(scope, stream));
        for entry in archive.entries()? {
            let mut entry = entry?;
            let raw = entry.path_bytes().into_owned();
            let rel = crate::archive::safe_relative(&raw)
                .map_err(|why| {
                    anyhow::anyhow!(
                        "refusing archive entry '{}': {why}",
                        String::from_utf8_lossy(&raw)
                    )
                })?
                .unwrap_or_default();
            let builder = if rel.starts_with("public/files") {
                &mut public
            } else if rel.starts_with("private/files") {
                &mut private
            } else if rel == Path::new("site_config.json") {
                let mut json = Vec::new();
                io::copy(&mut entry, &mut json)?;
                site_config = Some(json);
                continue;
            } else {
                continue;
            };
            // bench strips two components: the names must start with "./<site>/".
            let mut name = format!("./{site}/").into_bytes();
            name.extend_from_slice(rel.as_os_str().as_encoded_bytes());
            let link = entry.link_name_bytes().map(|l| l.into_owned());
            let header = entry.header().clone();
            append_verbatim(builder, header, &name, link.as_deref(), &mut entry)?;
        }
        // Read to the end so the last part is verified too.
        io::copy(&mut archive.into_inner(), &mut io::sink())?;
        Ok(())
    })
    .with_context(|| format!("restoring {} from snapshot {}", files.name, m.id))?;
    finish_files(public, private, site_config, out)
}

/// Appends folder `rel` of the restored `tree` (if it exists) under `./<site>/<rel>/…`, as
/// Frappe's own backups name their members.
fn append_tree(
    builder: &mut tar::Builder<File>,
    tree: &Path,
    rel: &Path,
    site: &str,
) -> anyhow::Result<()> {
    let path = tree.join(rel);
    let meta = match fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(anyhow::anyhow!(e).context(format!("reading {}", path.display()))),
    };
    let mut header = tar::Header::new_ustar();
    header.set_metadata(&meta);
    let mut name = format!("./{site}/").into_bytes();
    name.extend_from_slice(rel.as_os_str().as_encoded_bytes());
    let ft = meta.file_type();
    if ft.is_dir() {
        name.push(b'/');
        append_verbatim(builder, header, &name, None, &mut io::empty())?;
        let mut children: Vec<_> = fs::read_dir(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        children.sort();
        for child in children {
            append_tree(builder, tree, &rel.join(child), site)?;
        }
    } else if ft.is_symlink() {
        let target = fs::read_link(&path)?;
        header.set_size(0);
        append_verbatim(
            builder,
            header,
            &name,
            Some(target.as_os_str().as_encoded_bytes()),
            &mut io::empty(),
        )?;
    } else if ft.is_file() {
        let mut f = File::open(&path).with_context(|| format!("reading {}", path.display()))?;
        append_verbatim(builder, header, &name, None, &mut f)?;
    }
    Ok(())
}

/// Finishes bench's two archives and writes site_config.json; whether there was one.
fn finish_files(
    public: tar::Builder<File>,
    private: tar::Builder<File>,
    site_config: Option<Vec<u8>>,
    out: &BenchFiles,
) -> anyhow::Result<bool> {
    for (builder, path) in [(public, &out.public_files), (private, &out.private_files)] {
        builder
            .into_inner()
            .and_then(|f| f.sync_all())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    match (site_config, &out.site_config) {
        (Some(json), Some(path)) => {
            let mut f = create_private(path)?;
            f.write_all(&json)
                .and_then(|()| f.sync_all())
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Appends an entry under exactly `name` (the tar crate would drop a leading "./"), with pax
/// records for a name or link target that does not fit the ustar header.
fn append_verbatim<W: Write>(
    builder: &mut tar::Builder<W>,
    mut header: tar::Header,
    name: &[u8],
    link: Option<&[u8]>,
    data: &mut dyn io::Read,
) -> io::Result<()> {
    let mut pax: Vec<(&str, &[u8])> = Vec::new();
    let old = header.as_old_mut();
    old.name = [0; 100];
    let cut = name.len().min(100);
    old.name[..cut].copy_from_slice(&name[..cut]);
    if name.len() > 100 {
        pax.push(("path", name));
    }
    if let Some(ustar) = header.as_ustar_mut() {
        ustar.prefix = [0; 155];
    }
    if let Some(link) = link {
        let old = header.as_old_mut();
        old.linkname = [0; 100];
        let cut = link.len().min(100);
        old.linkname[..cut].copy_from_slice(&link[..cut]);
        if link.len() > 100 {
            pax.push(("linkpath", link));
        }
    }
    if !pax.is_empty() {
        builder.append_pax_extensions(pax)?;
    }
    header.set_cksum();
    builder.append(&header, data)
}

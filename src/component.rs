//! The WASI component: a thin adapter from the bindings `wit-bindgen` generates for
//! `wit/srvdb.wit` to the engine. No logic lives here; conversions only. Built for
//! `wasm32-wasip2` as `srvdb.wasm` (the engine uses the `std::fs` backend and SIMD128 there).

use crate::error::io_kind_name;
use crate::filter::Filter;
use crate::quant::{HnswParams, IndexInfo, IndexKind, IndexSpec, Quantization};
use crate::store::{str_refs, Delete, Missing, Query, Select, Store, Update, Write, WriteMode};
use crate::types::{EmbedderSpec, Metadata, Metric, OpenOptions, StorageKind};
use crate::Database;

wit_bindgen::generate!({ path: "wit", world: "srvdb" });

use exports::srvdb::engine::store::{
    self as wit, CorruptError, DimensionError, EmbedderError, FilterError, Guest, GuestDatabase,
    GuestEmbedder, Hit, IdError, InvalidError, IoError, MetadataError, ModelError, Stored,
};

struct Component;

impl Guest for Component {
    type Database = GuestDb;
    type Embedder = GuestModel;
}

/// The guest side of a `database` resource.
struct GuestDb {
    db: Database,
}

fn to_u32(x: usize) -> u32 {
    u32::try_from(x).unwrap_or(u32::MAX)
}

/// The engine's open options for the WIT record.
fn open_options(options: wit::OpenOptions) -> OpenOptions {
    let mut opts = OpenOptions {
        dimension: options.dimension,
        metric: options.metric.map(metric_from_wit),
        embedder: options.embedder.map(|e| EmbedderSpec {
            name: e.name,
            dimension: e.dimension,
        }),
        ..OpenOptions::default()
    };
    if let Some(n) = options.auto_commit_rows {
        opts.auto_commit_rows = n as usize;
    }
    if let Some(n) = options.buffer_bytes {
        opts.buffer_bytes = n as usize;
    }
    if options.rows_in_memory == Some(false) {
        opts.storage = StorageKind::OnDemand;
    }
    opts.read_only = options.read_only == Some(true);
    opts
}

fn wit_error(e: crate::Error) -> wit::Error {
    use crate::Error as E;
    match e {
        E::DimensionMismatch {
            expected,
            got,
            index,
        } => wit::Error::DimensionMismatch(DimensionError {
            expected,
            got: to_u32(got),
            index: index.map(to_u32),
        }),
        E::DuplicateId { id, index } => wit::Error::DuplicateId(IdError {
            id,
            index: index.map(to_u32),
        }),
        E::NotFound { id } => wit::Error::NotFound(id),
        E::InvalidInput { reason, index } => wit::Error::InvalidInput(InvalidError {
            reason,
            index: index.map(to_u32),
        }),
        E::Corrupt { file, reason } => wit::Error::Corrupt(CorruptError {
            file: file.display().to_string(),
            reason,
        }),
        E::Locked { path, .. } => wit::Error::Locked(path.display().to_string()),
        E::ReadOnly { reason } => wit::Error::ReadOnly(reason),
        E::Io { context, source } => wit::Error::Io(IoError {
            context,
            kind: io_kind_name(source.kind()).to_owned(),
            message: source.to_string(),
        }),
        E::Metadata { context, message } => {
            wit::Error::Metadata(MetadataError { context, message })
        }
        E::Poisoned { reason } => wit::Error::Poisoned(reason),
        E::EmbedderMismatch { stored, asked } => {
            wit::Error::EmbedderMismatch(EmbedderError { stored, asked })
        }
        E::Model { path, reason } => wit::Error::Model(ModelError {
            path: path.display().to_string(),
            reason,
        }),
        E::InvalidFilter { part, reason } => {
            wit::Error::InvalidFilter(FilterError { part, reason })
        }
        // Never raised inside the guest (only a host reports sandbox failures), and the WIT
        // has no case for it; like any case the WIT lacks, it crosses as an I/O error.
        other => wit::Error::Io(IoError {
            context: "the sandboxed engine".into(),
            kind: io_kind_name(std::io::ErrorKind::Other).to_owned(),
            message: other.to_string(),
        }),
    }
}

fn metric_from_wit(m: wit::Metric) -> Metric {
    match m {
        wit::Metric::Cosine => Metric::Cosine,
        wit::Metric::Dot => Metric::Dot,
        wit::Metric::L2 => Metric::L2,
    }
}

fn metric_to_wit(m: Metric) -> wit::Metric {
    match m {
        Metric::Cosine => wit::Metric::Cosine,
        Metric::Dot => wit::Metric::Dot,
        Metric::L2 => wit::Metric::L2,
    }
}

fn hits(found: Vec<crate::SearchHit>) -> Vec<Hit> {
    found
        .into_iter()
        .map(|h| Hit {
            id: h.id,
            score: h.score,
        })
        .collect()
}

fn quantization_from_wit(q: wit::Quantization) -> Quantization {
    match q {
        wit::Quantization::Int8 => Quantization::Int8,
        wit::Quantization::Binary => Quantization::Binary,
    }
}

fn quantization_to_wit(q: Quantization) -> wit::Quantization {
    match q {
        Quantization::Int8 => wit::Quantization::Int8,
        Quantization::Binary => wit::Quantization::Binary,
    }
}

fn index_kind_from_wit(k: wit::IndexKind) -> IndexKind {
    match k {
        wit::IndexKind::Flat => IndexKind::Flat,
        wit::IndexKind::Hnsw => IndexKind::Hnsw,
    }
}

fn index_kind_to_wit(k: IndexKind) -> wit::IndexKind {
    match k {
        IndexKind::Flat => wit::IndexKind::Flat,
        IndexKind::Hnsw => wit::IndexKind::Hnsw,
    }
}

fn index_info_to_wit(info: IndexInfo) -> wit::IndexInfo {
    wit::IndexInfo {
        kind: index_kind_to_wit(info.kind),
        quantization: info.quantization.map(quantization_to_wit),
        rows: info.rows,
        bytes: info.bytes,
        m: info.hnsw.map(|p| to_u32(p.m)),
        ef_construction: info.hnsw.map(|p| to_u32(p.ef_construction)),
    }
}

fn spec_to_wit(s: &EmbedderSpec) -> wit::EmbedderSpec {
    wit::EmbedderSpec {
        name: s.name.clone(),
        dimension: s.dimension,
    }
}

fn metadatas(given: Vec<Option<String>>) -> Vec<Option<Metadata>> {
    given
        .into_iter()
        .map(|m| m.map(Metadata::from_text))
        .collect()
}

/// Parses a filter that crossed as JSON text, with the engine's parser and limits.
fn parse_filter(given: Option<wit::Filter>) -> Result<Option<Filter>, wit::Error> {
    given
        .map(|f| Filter::parse(f.where_.as_deref(), f.where_document.as_deref()))
        .transpose()
        .map_err(wit_error)
}

/// A record as `get` and `records` return it: the metadata as the text it was stored as.
fn stored(r: crate::Record) -> Stored {
    Stored {
        id: r.id,
        vector: r.vector,
        metadata: r.metadata.map(|m| m.as_str().to_owned()),
        document: r.document,
    }
}

/// A `u64` count from the WIT as a `usize`, saturating (a 32-bit guest cannot hold more).
fn to_usize(x: u64) -> usize {
    usize::try_from(x).unwrap_or(usize::MAX)
}

fn write_mode(m: wit::WriteMode) -> WriteMode {
    match m {
        wit::WriteMode::Add => WriteMode::Add,
        wit::WriteMode::Upsert => WriteMode::Upsert,
    }
}

// Every call goes through `Store` (not `Database`'s inherent methods), so the component
// serves exactly the API the native and sandboxed engines share.
impl GuestDatabase for GuestDb {
    fn open(path: String, options: wit::OpenOptions) -> Result<wit::Database, wit::Error> {
        let db = Database::open(path, open_options(options)).map_err(wit_error)?;
        Ok(wit::Database::new(GuestDb { db }))
    }

    fn open_partition_reader(
        path: String,
        options: wit::OpenOptions,
    ) -> Result<wit::Database, wit::Error> {
        // Read-only whatever `options` says; the write options do not apply to it.
        let db = Database::open_partition_reader(path, open_options(options)).map_err(wit_error)?;
        Ok(wit::Database::new(GuestDb { db }))
    }

    fn write(&self, request: wit::WriteRequest) -> Result<(), wit::Error> {
        let ids = str_refs(&request.ids);
        let metas = metadatas(request.metadatas);
        let docs: Vec<Option<&str>> = request.documents.iter().map(Option::as_deref).collect();
        let write = Write::new(write_mode(request.mode), &ids, &request.vectors)
            .metadatas(&metas)
            .documents(&docs);
        Store::write(&self.db, &write).map_err(wit_error)
    }

    fn remove(&self, request: wit::DeleteRequest) -> Result<u32, wit::Error> {
        let ids = request.ids.as_deref().map(str_refs);
        let filter = parse_filter(request.filter)?;
        let delete = Delete {
            ids: ids.as_deref(),
            filter: filter.as_ref(),
            missing: if request.skip_missing {
                Missing::Skip
            } else {
                Missing::Reject
            },
        };
        Store::remove(&self.db, &delete)
            .map(to_u32)
            .map_err(wit_error)
    }

    fn update(&self, request: wit::UpdateRequest) -> Result<(), wit::Error> {
        let ids = str_refs(&request.ids);
        let metas = request.metadatas.map(metadatas);
        let docs: Option<Vec<Option<&str>>> = request
            .documents
            .as_ref()
            .map(|d| d.iter().map(Option::as_deref).collect());
        let mut update = Update::ids(&ids);
        if let Some(vectors) = &request.vectors {
            update = update.vectors(vectors);
        }
        if let Some(metas) = &metas {
            update = update.metadatas(metas);
        }
        if let Some(docs) = &docs {
            update = update.documents(docs);
        }
        Store::update(&self.db, &update).map_err(wit_error)
    }

    fn records(&self, request: wit::SelectRequest) -> Result<Vec<Stored>, wit::Error> {
        let filter = parse_filter(request.filter)?;
        let mut select = Select::all().offset(to_usize(request.offset));
        if let Some(filter) = &filter {
            select = select.filter(filter);
        }
        if let Some(limit) = request.limit {
            select = select.limit(to_usize(limit));
        }
        let found = Store::records(&self.db, &select).map_err(wit_error)?;
        Ok(found.into_iter().map(stored).collect())
    }

    fn count_matching(&self, given: wit::Filter) -> Result<u64, wit::Error> {
        let filter = Filter::parse(given.where_.as_deref(), given.where_document.as_deref())
            .map_err(wit_error)?;
        Store::count_matching(&self.db, &filter).map_err(wit_error)
    }

    fn create_field_index(&self, field: String) -> Result<(), wit::Error> {
        Store::create_field_index(&self.db, &field).map_err(wit_error)
    }

    fn drop_field_index(&self, field: String) -> Result<bool, wit::Error> {
        Store::drop_field_index(&self.db, &field).map_err(wit_error)
    }

    fn field_indexes(&self) -> Result<Vec<String>, wit::Error> {
        Store::field_indexes(&self.db).map_err(wit_error)
    }

    fn create_index(&self, spec: wit::IndexSpec) -> Result<wit::IndexInfo, wit::Error> {
        let spec = IndexSpec {
            kind: index_kind_from_wit(spec.kind),
            quantization: spec.quantization.map(quantization_from_wit),
            hnsw: HnswParams::given(
                spec.m.map(|n| n as usize),
                spec.ef_construction.map(|n| n as usize),
            ),
        };
        Store::create_index(&self.db, &spec)
            .map(index_info_to_wit)
            .map_err(wit_error)
    }

    fn drop_index(&self) -> Result<bool, wit::Error> {
        Store::drop_index(&self.db).map_err(wit_error)
    }

    fn index_info(&self) -> Result<wit::IndexInfo, wit::Error> {
        Store::index_info(&self.db)
            .map(index_info_to_wit)
            .map_err(wit_error)
    }

    fn query(&self, request: wit::QueryRequest) -> Result<Vec<Vec<Hit>>, wit::Error> {
        let k = request.k as usize;
        let filter = parse_filter(request.filter)?;
        let mut query = if request.batch {
            Query::batch(&request.queries, k)
        } else {
            Query::one(&request.queries, k)
        };
        if let Some(filter) = &filter {
            query = query.filter(filter);
        }
        if let Some(n) = request.oversample {
            query = query.oversample(n as usize);
        }
        if let Some(n) = request.ef {
            query = query.ef(n as usize);
        }
        query = query.exact(request.exact);
        let found = Store::query(&self.db, &query).map_err(wit_error)?;
        Ok(found.into_iter().map(hits).collect())
    }

    // Not in `Store`: the host's partition scan (see the WIT), on `Database` itself.
    fn query_rows(
        &self,
        request: wit::QueryRequest,
        first_row: u64,
        end_row: u64,
    ) -> Result<Vec<Vec<Hit>>, wit::Error> {
        let filter = parse_filter(request.filter)?;
        let found = self
            .db
            .query_rows(
                &request.queries,
                request.k as usize,
                filter.as_ref(),
                first_row,
                end_row,
            )
            .map_err(wit_error)?;
        Ok(found.into_iter().map(hits).collect())
    }

    fn scan_state(&self) -> Result<wit::ScanState, wit::Error> {
        let state = self.db.scan_state();
        Ok(wit::ScanState {
            rows: state.rows,
            bytes: state.bytes,
            uncommitted: state.uncommitted,
            indexed: state.indexed,
        })
    }

    fn documents(&self, ids: Vec<String>) -> Result<Vec<Option<String>>, wit::Error> {
        Store::documents(&self.db, &str_refs(&ids)).map_err(wit_error)
    }

    fn embedder(&self) -> Result<Option<wit::EmbedderSpec>, wit::Error> {
        let spec = Store::embedder(&self.db).map_err(wit_error)?;
        Ok(spec.as_ref().map(spec_to_wit))
    }

    fn get(&self, id: String) -> Result<Option<Stored>, wit::Error> {
        let found = Store::get(&self.db, &id).map_err(wit_error)?;
        Ok(found.map(stored))
    }

    fn count(&self) -> Result<u64, wit::Error> {
        Store::count(&self.db).map_err(wit_error)
    }

    fn dimension(&self) -> Result<Option<u32>, wit::Error> {
        Store::dimension(&self.db).map_err(wit_error)
    }

    fn metric(&self) -> Result<wit::Metric, wit::Error> {
        Store::metric(&self.db)
            .map(metric_to_wit)
            .map_err(wit_error)
    }

    fn ids(&self) -> Result<Vec<String>, wit::Error> {
        Store::ids(&self.db).map_err(wit_error)
    }

    fn contains(&self, id: String) -> Result<bool, wit::Error> {
        Store::contains(&self.db, &id).map_err(wit_error)
    }

    fn persist(&self) -> Result<(), wit::Error> {
        Store::persist(&self.db).map_err(wit_error)
    }

    fn compact(&self) -> Result<(), wit::Error> {
        Store::compact(&self.db).map_err(wit_error)
    }

    fn kernel(&self) -> Result<String, wit::Error> {
        Store::kernel(&self.db).map_err(wit_error)
    }
}

/// The guest side of an `embedder` resource: the model, when the component carries it.
#[cfg(feature = "text")]
struct GuestModel {
    embedder: crate::embed::Embedder,
}

#[cfg(feature = "text")]
impl GuestEmbedder for GuestModel {
    fn load(path: String, name: String) -> Result<wit::Embedder, wit::Error> {
        let embedder = crate::embed::Embedder::from_dir_named(path, name).map_err(wit_error)?;
        Ok(wit::Embedder::new(GuestModel { embedder }))
    }

    fn spec(&self) -> wit::EmbedderSpec {
        spec_to_wit(&self.embedder.spec())
    }

    fn embed(&self, texts: Vec<String>) -> Result<Vec<f32>, wit::Error> {
        self.embedder.embed(&texts).map_err(wit_error)
    }
}

/// Without the `text` feature the resource exists (one WIT for every build) but cannot load.
#[cfg(not(feature = "text"))]
struct GuestModel;

#[cfg(not(feature = "text"))]
impl GuestEmbedder for GuestModel {
    fn load(path: String, _name: String) -> Result<wit::Embedder, wit::Error> {
        Err(wit::Error::Model(ModelError {
            path,
            reason: "this component was built without the text embedder: build it with cargo feature `text`, as `make component` does".into(),
        }))
    }

    fn spec(&self) -> wit::EmbedderSpec {
        wit::EmbedderSpec {
            name: String::new(),
            dimension: 0,
        }
    }

    fn embed(&self, _texts: Vec<String>) -> Result<Vec<f32>, wit::Error> {
        Err(wit::Error::Model(ModelError {
            path: String::new(),
            reason: "this component has no text embedder".into(),
        }))
    }
}

export!(Component);

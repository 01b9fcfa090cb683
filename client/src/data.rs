//! Databases and their records: create, list and show databases; put, get, delete, list and
//! batch records.

use bytes::Bytes;
use hyper::Method;

use super::error::ClientError;
use super::paths::{db_path, query_string, record_path};
use super::{paths, Client, NO_BODY};
use crate::api::{
    CreateDatabaseRequest, DatabaseInfo, DatabaseList, RecordBatchOp, RecordBatchRequest,
    RecordBatchResponse, RecordBatchResult, RecordListQuery, RecordPage,
};

impl Client {
    // ----- databases

    /// `POST /v1/databases`; without `key` the database gets a provider-managed key.
    pub async fn create_database(
        &self,
        name: &str,
        key: Option<&str>,
        backup_key: Option<&str>,
    ) -> Result<DatabaseInfo, ClientError> {
        let body = CreateDatabaseRequest {
            name: name.to_string(),
            key: key.map(str::to_string),
            backup_key: backup_key.map(str::to_string),
            ..Default::default()
        };
        self.create_database_with(&body).await
    }

    /// `POST /v1/databases` with every option of the request.
    pub async fn create_database_with(
        &self,
        request: &CreateDatabaseRequest,
    ) -> Result<DatabaseInfo, ClientError> {
        self.call_json(Method::POST, "/v1/databases", Some(request))
            .await
    }

    /// `GET /v1/databases`.
    pub async fn list_databases(&self) -> Result<Vec<DatabaseInfo>, ClientError> {
        self.list_databases_in(None).await
    }

    /// `GET /v1/databases?state=…`: only databases in `state`, when given.
    pub async fn list_databases_in(
        &self,
        state: Option<&str>,
    ) -> Result<Vec<DatabaseInfo>, ClientError> {
        let path = match state {
            Some(state) => format!("/v1/databases?state={}", paths::encode_segment(state)),
            None => "/v1/databases".to_string(),
        };
        let list: DatabaseList = self.call_json(Method::GET, &path, NO_BODY).await?;
        Ok(list.databases)
    }

    /// `GET /v1/databases/{db}` (works in every state).
    pub async fn get_database(&self, db: &str) -> Result<DatabaseInfo, ClientError> {
        self.call_json(Method::GET, &db_path(db, ""), NO_BODY).await
    }

    // ----- records

    /// `PUT /v1/databases/{db}/records/{rec}`.
    pub async fn put_record(&self, db: &str, rec: &str, value: &[u8]) -> Result<(), ClientError> {
        let body = Bytes::copy_from_slice(value);
        self.call(
            Method::PUT,
            &record_path(db, rec),
            Some(body),
            Some("application/octet-stream"),
        )
        .await
        .map(drop)
    }

    /// `GET /v1/databases/{db}/records/{rec}`: the value (`not_found` when absent).
    pub async fn get_record(&self, db: &str, rec: &str) -> Result<Vec<u8>, ClientError> {
        self.call(Method::GET, &record_path(db, rec), None, None)
            .await
            .map(Vec::from)
    }

    /// `DELETE /v1/databases/{db}/records/{rec}`.
    pub async fn delete_record(&self, db: &str, rec: &str) -> Result<(), ClientError> {
        self.call(Method::DELETE, &record_path(db, rec), None, None)
            .await
            .map(drop)
    }

    /// `POST /v1/databases/{db}/records:batch`: many operations in one request, run in order;
    /// one result per operation (see [`RecordBatchOp::put`] to build puts). Fails as a whole
    /// only when the batch itself is refused (bad input, denied, database unusable).
    pub async fn record_batch(
        &self,
        db: &str,
        ops: Vec<RecordBatchOp>,
    ) -> Result<Vec<RecordBatchResult>, ClientError> {
        let request = RecordBatchRequest { ops };
        let response: RecordBatchResponse = self
            .call_json(Method::POST, &db_path(db, "/records:batch"), Some(&request))
            .await?;
        Ok(response.results)
    }

    /// `GET /v1/databases/{db}/records?prefix=&after=&limit=`: one page of keys.
    pub async fn list_records(
        &self,
        db: &str,
        query: &RecordListQuery,
    ) -> Result<RecordPage, ClientError> {
        let limit = query.limit.map(|l| l.to_string());
        let path = format!(
            "{}{}",
            db_path(db, "/records"),
            query_string(&[
                ("prefix", query.prefix.as_deref()),
                ("after", query.after.as_deref()),
                ("limit", limit.as_deref()),
            ])
        );
        self.call_json(Method::GET, &path, NO_BODY).await
    }
}

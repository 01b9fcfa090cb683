//! Bearer tokens: create (the only time a secret is shown), list and revoke.

use super::paths::encode_segment;
use super::{parse_json, Client, ClientError, Method, NO_BODY};
use crate::api::{CreateTokenRequest, NewToken, TokenInfo, TokenList, TokenRole};

impl Client {
    /// `POST /v1/tokens`: a token of `role` that never expires; `databases` scopes an `app`
    /// token.
    pub async fn create_token(
        &self,
        role: TokenRole,
        databases: &[String],
    ) -> Result<NewToken, ClientError> {
        self.create_token_with(&CreateTokenRequest {
            role,
            databases: databases.to_vec(),
            ..Default::default()
        })
        .await
    }

    /// `POST /v1/tokens` with every option (a name, a time to live such as "30d"). The answer
    /// carries the secret in a [`crate::SecretString`], read here from memory wiped on drop.
    pub async fn create_token_with(
        &self,
        request: &CreateTokenRequest,
    ) -> Result<NewToken, ClientError> {
        let bytes = self
            .call_secret(Method::POST, "/v1/tokens", request)
            .await?;
        parse_json(&bytes)
    }

    /// `GET /v1/tokens` (never the secrets).
    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>, ClientError> {
        let list: TokenList = self.call_json(Method::GET, "/v1/tokens", NO_BODY).await?;
        Ok(list.tokens)
    }

    /// `DELETE /v1/tokens/{id}`.
    pub async fn revoke_token(&self, id: &str) -> Result<(), ClientError> {
        let path = format!("/v1/tokens/{}", encode_segment(id));
        self.call(Method::DELETE, &path, None, None).await.map(drop)
    }
}

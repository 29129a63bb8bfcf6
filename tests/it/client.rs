//! Typed requests and answers (model: crates.io's `RequestHelper`): a test says what it does
//! (`c.volume_create("data", 2)`) and reads answers as the API's own views, so one short test can
//! check one behaviour. The wire names of those views are pinned by `api::views`'s unit test;
//! raw `get`/`post` from `common` stay for malformed requests.

#![allow(dead_code)]

use crate::common::*;
use actix_web::test;
use api_web::api::views::{NicView, VolumeView};
use api_web::api::{self, PageView};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::marker::PhantomData;

/// The app under test with typed calls.
pub struct Client<A> {
    pub app: A,
}

/// A client of `t`'s app.
pub async fn client(t: &TestApp) -> Client<impl App> {
    Client {
        app: test::init_service(api::app(t.ctx.clone())).await,
    }
}

/// An answer whose `data` reads as `T` when it is a success.
pub struct Answer<T> {
    pub resp: Resp,
    _t: PhantomData<T>,
}

impl<T: DeserializeOwned> Answer<T> {
    /// Asserts success and reads `data` as `T`.
    #[track_caller]
    pub fn good(&self) -> T {
        let data = self.resp.ok().clone();
        serde_json::from_value(data.clone())
            .unwrap_or_else(|e| panic!("data does not read as the view ({e}): {data}"))
    }

    /// Asserts an error answer (status, code, envelope) and returns its message.
    #[track_caller]
    pub fn error(&self, status: u16, code: &str) -> String {
        self.resp.assert_error(status, code);
        self.resp.body["message"].as_str().unwrap().to_string()
    }
}

pub type Page<T> = PageView<T>;

impl<A: App> Client<A> {
    pub async fn get<T>(&self, uri: &str) -> Answer<T> {
        Answer {
            resp: get(&self.app, uri).await,
            _t: PhantomData,
        }
    }

    pub async fn post<T>(&self, uri: &str, body: Value) -> Answer<T> {
        Answer {
            resp: post(&self.app, uri, body).await,
            _t: PhantomData,
        }
    }

    // ------------------------------------------------------------------ volumes

    pub async fn volume_create_with(&self, body: Value) -> Answer<VolumeView> {
        self.post("/api/v1/volume/create", body).await
    }

    /// A new volume, asserted `available`.
    pub async fn volume_create(&self, name: &str, gib: u64) -> VolumeView {
        let v = self
            .volume_create_with(json!({"volume_name": name, "volume_size": gib}))
            .await
            .good();
        assert_eq!(v.status.as_str(), "available");
        v
    }

    /// `volume/list?<query>`.
    pub async fn volumes(&self, query: &str) -> Answer<Page<VolumeView>> {
        self.get(&format!("/api/v1/volume/list?{query}")).await
    }

    /// The design's delete: a GET.
    pub async fn volume_delete_get(&self, id: &str) -> Answer<Value> {
        self.get(&format!("/api/v1/volume/delete?volume_id={id}"))
            .await
    }

    pub async fn volume_delete(&self, id: &str) -> Answer<Value> {
        self.post("/api/v1/volume/delete", json!({"volume_id": id}))
            .await
    }

    pub async fn volume_mount(&self, volume: &str, instance: &str) -> Answer<Value> {
        self.post(
            "/api/v1/volume/mount",
            json!({"volume_id": volume, "instance_id": instance}),
        )
        .await
    }

    pub async fn volume_unmount(&self, volume: &str, instance: &str) -> Answer<Value> {
        self.post(
            "/api/v1/volume/unmount",
            json!({"volume_id": volume, "instance_id": instance}),
        )
        .await
    }

    // ------------------------------------------------------------------ NICs

    pub async fn nic_create(&self, body: Value) -> Answer<NicView> {
        self.post("/api/v1/network/create", body).await
    }

    /// `network/<list|search>?<query>`.
    pub async fn nics(&self, path: &str, query: &str) -> Answer<Page<NicView>> {
        self.get(&format!("/api/v1/network/{path}?{query}")).await
    }

    pub async fn nic_delete(&self, id: &str) -> Answer<Value> {
        self.post(
            "/api/v1/network/delete",
            json!({"network_interface_id": id}),
        )
        .await
    }

    pub async fn nic_attach(&self, nic: &str, instance: &str) -> Answer<Value> {
        self.post(
            "/api/v1/network/attach",
            json!({"network_interface_id": nic, "instance_id": instance}),
        )
        .await
    }

    pub async fn nic_detach(&self, nic: &str, instance: &str) -> Answer<Value> {
        self.post(
            "/api/v1/network/detach",
            json!({"network_interface_id": nic, "instance_id": instance}),
        )
        .await
    }
}

//! A blocking wrapper for firmware without an async runtime: the
//! [`Client`] driven on a private current-thread tokio runtime, on the
//! calling thread.

use ha_core::wire::Reading;

use crate::{
    Buffer, Client, ClientConfig, ClockRefusal, Counters, Error, FlushReport, MemoryBuffer,
};

/// [`Client`] with blocking methods. Must not be used from inside an async
/// runtime (tokio refuses to block inside one).
#[derive(Debug)]
pub struct BlockingClient<B: Buffer = MemoryBuffer> {
    runtime: tokio::runtime::Runtime,
    client: Client<B>,
}

impl<B: Buffer> BlockingClient<B> {
    /// Like [`Client::new`]; also starts the private runtime.
    pub fn new(config: ClientConfig, buffer: B) -> Result<Self, Error> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| Error::Config(format!("starting the runtime: {e}")))?;
        // The client registers sockets with the runtime it runs on.
        let client = {
            let _guard = runtime.enter();
            Client::new(config, buffer)?
        };
        Ok(BlockingClient { runtime, client })
    }

    /// [`Client::push`].
    pub fn push(&mut self, reading: Reading) -> Result<(), Error> {
        self.client.push(reading)
    }

    /// [`Client::flush`], blocking until it returns.
    pub fn flush(&mut self) -> Result<FlushReport, Error> {
        self.runtime.block_on(self.client.flush())
    }

    /// [`Client::send`], blocking until it returns.
    pub fn send(&mut self, reading: Reading) -> Result<FlushReport, Error> {
        self.runtime.block_on(self.client.send(reading))
    }

    /// [`Client::counters`].
    pub fn counters(&self) -> Counters {
        self.client.counters()
    }

    /// [`Client::held`].
    pub fn held(&self, refusal: ClockRefusal) -> Result<Vec<Reading>, Error> {
        self.client.held(refusal)
    }

    /// [`Client::forget_held`].
    pub fn forget_held(&mut self, seqs: &[u64]) -> Result<(), Error> {
        self.client.forget_held(seqs)
    }

    /// [`Client::release_held`].
    pub fn release_held(&mut self, refusal: ClockRefusal) -> Result<usize, Error> {
        self.client.release_held(refusal)
    }

    /// The wrapped async client.
    pub fn client(&self) -> &Client<B> {
        &self.client
    }
}

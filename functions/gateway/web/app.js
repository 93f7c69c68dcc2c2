// vidmp3 web page: log in, upload videos with progress, follow jobs live, download MP3s, delete jobs.
// Plain JavaScript against the gateway's JSON API; no framework, no build step. The token lives in
// sessionStorage only (never in a URL), so closing the tab logs out.
"use strict";

(() => {
  const TOKEN_KEY = "vidmp3.token";
  const POLL_ACTIVE_MS = 1500;
  const POLL_IDLE_MS = 10000;
  const POLL_MAX_BACKOFF_MS = 30000;

  const $ = (id) => document.getElementById(id);
  const el = {
    banner: $("banner"),
    loginView: $("login-view"),
    appView: $("app-view"),
    loginForm: $("login-form"),
    email: $("email"),
    password: $("password"),
    loginError: $("login-error"),
    loginButton: $("login-button"),
    account: $("account"),
    who: $("who"),
    logout: $("logout"),
    dropzone: $("dropzone"),
    file: $("file"),
    maxSize: $("max-size"),
    quality: $("quality"),
    uploadStatus: $("upload-status"),
    uploadText: $("upload-text"),
    uploadProgress: $("upload-progress"),
    uploadCancel: $("upload-cancel"),
    uploadError: $("upload-error"),
    jobs: $("jobs"),
    jobsEmpty: $("jobs-empty"),
    jobsUpdated: $("jobs-updated"),
    linkNotice: $("link-notice"),
    announcer: $("announcer"),
    template: $("job-template"),
  };
  const maxUploadBytes = Number(
    document.querySelector('meta[name="vidmp3-max-upload-bytes"]').content,
  );

  let token = sessionStorage.getItem(TOKEN_KEY);
  let expiryTimer = null;
  let pollTimer = null;
  let pollFailures = 0;
  let currentUpload = null;
  let focusJobId = new URLSearchParams(location.hash.slice(1)).get("job");
  const jobElements = new Map(); // job_id -> <li>
  const lastStates = new Map(); // job_id -> state, to announce changes

  // ---------- formatting ----------

  function formatBytes(n) {
    if (!Number.isFinite(n)) return "";
    const units = ["bytes", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1000 && i < units.length - 1) {
      n /= 1000;
      i += 1;
    }
    return i === 0 ? `${n} bytes` : `${n.toFixed(n < 10 ? 1 : 0)} ${units[i]}`;
  }

  function formatDuration(seconds) {
    const s = Math.round(seconds);
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const r = s % 60;
    const mm = h ? String(m).padStart(2, "0") : String(m);
    return `${h ? `${h}:` : ""}${mm}:${String(r).padStart(2, "0")}`;
  }

  const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
  function formatAgo(iso) {
    const t = Date.parse(iso);
    if (!Number.isFinite(t)) return "";
    const seconds = Math.round((t - Date.now()) / 1000);
    if (Math.abs(seconds) < 45) return "just now";
    const minutes = Math.round(seconds / 60);
    if (Math.abs(minutes) < 60) return relative.format(minutes, "minute");
    const hours = Math.round(minutes / 60);
    if (Math.abs(hours) < 24) return relative.format(hours, "hour");
    return new Date(t).toLocaleDateString();
  }

  // ---------- messages ----------

  function show(node, text) {
    node.textContent = text;
    node.hidden = !text;
  }

  function announce(text) {
    el.announcer.textContent = "";
    // A fresh text node each time so screen readers read repeated messages too.
    setTimeout(() => {
      el.announcer.textContent = text;
    }, 50);
  }

  function setBanner(text) {
    show(el.banner, text);
  }

  /** A problem+json body (RFC 9457), or null. */
  async function readProblem(response) {
    try {
      const body = await response.json();
      return body && typeof body === "object" ? body : null;
    } catch {
      return null;
    }
  }

  /** Plain words for an API error, by status and problem code. */
  function explain(status, problem, context) {
    const detail = problem && problem.detail ? problem.detail : "";
    switch (status) {
      case 0:
        return "The service can't be reached. Check your connection and try again.";
      case 401:
        return context === "login"
          ? "That email and password don't match an account."
          : "Your session has expired. Please log in again.";
      case 404:
        return "That file no longer exists.";
      case 413:
        return `This file is too large. The limit is ${formatBytes(maxUploadBytes)}.`;
      case 415:
        return "This doesn't look like a video or audio file. Choose a video such as MP4, MOV, MKV, WebM or AVI.";
      case 429: {
        const wait = problem && problem.retry_after_seconds;
        return wait
          ? `Too many attempts. Try again in ${wait} seconds.`
          : "Too many attempts. Please wait a minute and try again.";
      }
      case 502:
      case 503:
      case 504:
        return "The service is unavailable right now. Please try again in a moment.";
      default:
        if (status === 400 && detail) return `The upload was refused: ${detail}.`;
        return detail ? `Something went wrong: ${detail}` : `Something went wrong (error ${status}).`;
    }
  }

  // ---------- session ----------

  function claimsOf(jwt) {
    try {
      const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      const json = decodeURIComponent(
        Array.from(atob(part), (c) => `%${c.charCodeAt(0).toString(16).padStart(2, "0")}`).join(""),
      );
      return JSON.parse(json);
    } catch {
      return null;
    }
  }

  function startSession(newToken) {
    const claims = claimsOf(newToken);
    if (!claims || (claims.exp && claims.exp * 1000 <= Date.now())) {
      endSession("Your session has expired. Please log in again.");
      return;
    }
    token = newToken;
    sessionStorage.setItem(TOKEN_KEY, token);
    el.who.textContent = claims.email || "";
    el.account.hidden = false;
    el.loginView.hidden = true;
    el.appView.hidden = false;
    el.maxSize.textContent = formatBytes(maxUploadBytes);
    clearTimeout(expiryTimer);
    if (claims.exp) {
      const left = claims.exp * 1000 - Date.now();
      // setTimeout overflows past ~24.8 days; such a token is re-checked on the next 401 anyway.
      if (left < 2 ** 31 - 1) {
        expiryTimer = setTimeout(
          () => endSession("Your session has expired. Please log in again."),
          left,
        );
      }
    }
    poll(0);
  }

  function endSession(message) {
    token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    clearTimeout(expiryTimer);
    clearTimeout(pollTimer);
    if (currentUpload) currentUpload.cancel(true);
    currentUpload = null;
    el.uploadStatus.hidden = true;
    jobElements.clear();
    lastStates.clear();
    el.jobs.replaceChildren();
    show(el.linkNotice, "");
    el.account.hidden = true;
    el.appView.hidden = true;
    el.loginView.hidden = false;
    setBanner("");
    show(el.loginError, message || "");
    el.password.value = "";
    (el.email.value ? el.password : el.email).focus();
  }

  /** fetch with the bearer token; a 401 ends the session. Returns the Response (status 0 on network failure). */
  async function api(path, options = {}) {
    const headers = new Headers(options.headers || {});
    headers.set("Authorization", `Bearer ${token}`);
    if (!headers.has("Accept")) headers.set("Accept", "application/json");
    let response;
    try {
      response = await fetch(path, { ...options, headers, cache: "no-store" });
    } catch {
      return { ok: false, status: 0, json: async () => null, headers: new Headers() };
    }
    if (response.status === 401 && token) {
      endSession("Your session has expired. Please log in again.");
    }
    return response;
  }

  el.loginForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    show(el.loginError, "");
    const email = el.email.value.trim();
    const password = el.password.value;
    if (!email || !password) {
      show(el.loginError, "Enter your email and password.");
      (email ? el.password : el.email).focus();
      return;
    }
    el.loginButton.disabled = true;
    el.loginButton.textContent = "Logging in…";
    try {
      const bytes = new TextEncoder().encode(`${email}:${password}`);
      const basic = btoa(String.fromCharCode(...bytes));
      let response;
      try {
        response = await fetch("/login", {
          method: "POST",
          headers: { Authorization: `Basic ${basic}`, Accept: "application/json" },
          cache: "no-store",
        });
      } catch {
        response = null;
      }
      if (response && response.ok) {
        const body = await response.json();
        el.password.value = "";
        startSession(body.access_token);
        announce("Logged in.");
        el.file.focus();
      } else {
        const status = response ? response.status : 0;
        const problem = response ? await readProblem(response) : null;
        if (status === 429 && problem && !problem.retry_after_seconds) {
          const retry = Number(response.headers.get("Retry-After"));
          if (retry) problem.retry_after_seconds = retry;
        }
        show(el.loginError, explain(status, problem, "login"));
        el.password.select();
        el.password.focus();
      }
    } finally {
      el.loginButton.disabled = false;
      el.loginButton.textContent = "Log in";
    }
  });

  el.logout.addEventListener("click", () => {
    endSession("");
    announce("Logged out.");
  });

  // ---------- upload ----------

  function uploadOne(file, index, count) {
    return new Promise((resolve) => {
      const xhr = new XMLHttpRequest();
      const label = count > 1 ? `Uploading ${index + 1} of ${count}: ${file.name}` : `Uploading ${file.name}`;
      el.uploadStatus.hidden = false;
      el.uploadProgress.value = 0;
      el.uploadText.textContent = `${label}…`;
      currentUpload = {
        cancel(silent) {
          xhr.abort();
          if (!silent) announce("Upload cancelled.");
        },
      };
      xhr.upload.addEventListener("progress", (e) => {
        if (!e.lengthComputable) return;
        el.uploadProgress.value = e.loaded / e.total;
        el.uploadText.textContent = `${label}: ${Math.floor((100 * e.loaded) / e.total)}% (${formatBytes(e.loaded)} of ${formatBytes(e.total)})`;
      });
      xhr.addEventListener("load", () => {
        let body = null;
        try {
          body = JSON.parse(xhr.responseText);
        } catch {
          body = null;
        }
        if (xhr.status === 202) {
          resolve({ ok: true, job: body });
        } else {
          if (xhr.status === 401) endSession("Your session has expired. Please log in again.");
          resolve({ ok: false, message: `${file.name}: ${explain(xhr.status, body, "upload")}` });
        }
      });
      xhr.addEventListener("error", () =>
        resolve({
          ok: false,
          message: `${file.name}: the upload broke off. The service can't be reached or refused the file; check your connection and try again.`,
        }),
      );
      xhr.addEventListener("abort", () => resolve({ ok: false, cancelled: true }));
      const form = new FormData();
      const option = el.quality.value;
      if (option) {
        const [name, value] = option.split("=");
        form.append(name, value); // options go before the file part (the gateway streams the file)
      }
      form.append("file", file, file.name);
      xhr.open("POST", "/upload");
      xhr.setRequestHeader("Authorization", `Bearer ${token}`);
      xhr.setRequestHeader("Accept", "application/json");
      xhr.send(form);
    });
  }

  async function uploadFiles(files) {
    if (!token || currentUpload || !files.length) return;
    show(el.uploadError, "");
    const errors = [];
    const accepted = [];
    for (const [i, file] of files.entries()) {
      if (file.size > maxUploadBytes) {
        errors.push(`${file.name}: ${explain(413, null, "upload")}`);
        continue;
      }
      if (file.size === 0) {
        errors.push(`${file.name}: the file is empty.`);
        continue;
      }
      const result = await uploadOne(file, i, files.length);
      if (!token) return;
      if (result.cancelled) break;
      if (result.ok) {
        accepted.push(file.name);
        if (result.job && result.job.job_id) {
          focusJobId = null;
          poll(0);
        }
      } else {
        errors.push(result.message);
      }
    }
    currentUpload = null;
    el.uploadStatus.hidden = true;
    el.file.value = "";
    if (errors.length) {
      show(el.uploadError, errors.join("\n"));
    }
    if (accepted.length) {
      announce(`${accepted.join(", ")} uploaded. Converting now; you'll also get an email when it is ready.`);
    }
    poll(0);
  }

  el.file.addEventListener("change", () => uploadFiles(Array.from(el.file.files)));
  el.uploadCancel.addEventListener("click", () => currentUpload && currentUpload.cancel(false));

  for (const type of ["dragenter", "dragover"]) {
    el.dropzone.addEventListener(type, (e) => {
      e.preventDefault();
      el.dropzone.classList.add("dragging");
    });
  }
  for (const type of ["dragleave", "dragend", "drop"]) {
    el.dropzone.addEventListener(type, () => el.dropzone.classList.remove("dragging"));
  }
  el.dropzone.addEventListener("drop", (e) => {
    e.preventDefault();
    uploadFiles(Array.from(e.dataTransfer.files));
  });
  // A file dropped outside the drop zone would otherwise replace the page with the video.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());

  // ---------- jobs ----------

  const STATE_LABELS = {
    uploaded: "Queued",
    converting: "Converting",
    converted: "Ready",
    failed: "Failed",
  };

  function renderJob(li, job) {
    li.dataset.state = job.state;
    li.querySelector(".job-name").textContent = job.filename;
    const badge = li.querySelector(".badge");
    const percent = Math.round((job.progress || 0) * 100);
    badge.textContent =
      job.state === "converting" ? `Converting ${percent}%` : STATE_LABELS[job.state] || job.state;
    badge.className = `badge badge-${job.state}`;

    const meta = [];
    if (job.mp3) meta.push(`MP3 ${formatDuration(job.mp3.duration_s)}, ${formatBytes(job.mp3.size_bytes)}`);
    else meta.push(`video ${formatBytes(job.size_bytes)}`);
    meta.push(formatAgo(job.created_at));
    if (job.state === "converted" && job.notified) meta.push("emailed");
    li.querySelector(".job-meta").textContent = meta.join(" · ");

    const progress = li.querySelector(".job-progress");
    const active = job.state === "uploaded" || job.state === "converting";
    progress.hidden = !active;
    if (job.state === "converting") progress.value = job.progress || 0;
    else progress.removeAttribute("value"); // indeterminate while queued
    progress.setAttribute("aria-label", `${job.filename}: ${badge.textContent}`);

    const note = li.querySelector(".job-note");
    if (job.state === "failed") {
      const why = job.error ? job.error.message : "the conversion failed";
      note.className = "job-note message error";
      show(note, `Could not convert: ${why}.`);
    } else if (job.state === "converted" && job.partial) {
      note.className = "job-note message warning";
      show(note, "The video was damaged; only the part that could be read was converted.");
    } else {
      show(note, "");
    }

    const download = li.querySelector(".download");
    download.hidden = job.state !== "converted";
    download.setAttribute("aria-label", `Download ${mp3Name(job.filename)}`);
    li.querySelector(".delete").setAttribute("aria-label", `Delete ${job.filename}`);
  }

  function mp3Name(filename) {
    const dot = filename.lastIndexOf(".");
    return `${dot > 0 ? filename.slice(0, dot) : filename}.mp3`;
  }

  function makeJobElement(job) {
    const li = el.template.content.firstElementChild.cloneNode(true);
    li.id = `job-${job.job_id}`;
    li.dataset.jobId = job.job_id;
    li.querySelector(".download").addEventListener("click", (e) => download(li, e.currentTarget));
    li.querySelector(".delete").addEventListener("click", (e) => removeJob(li, e.currentTarget));
    return li;
  }

  function renderJobs(jobs) {
    const seen = new Set();
    let previous = null;
    for (const job of jobs) {
      seen.add(job.job_id);
      let li = jobElements.get(job.job_id);
      if (!li) {
        li = makeJobElement(job);
        jobElements.set(job.job_id, li);
      }
      renderJob(li, job);
      li.jobView = job;
      // Keep the list in the server's order (newest first) without re-creating nodes (focus stays put).
      const want = previous ? previous.nextSibling : el.jobs.firstChild;
      if (want !== li) el.jobs.insertBefore(li, want);
      previous = li;

      const before = lastStates.get(job.job_id);
      if (before && before !== job.state) {
        if (job.state === "converted") announce(`${job.filename} is ready to download.`);
        if (job.state === "failed") announce(`${job.filename} could not be converted.`);
      }
      lastStates.set(job.job_id, job.state);
    }
    for (const [id, li] of jobElements) {
      if (!seen.has(id)) {
        li.remove();
        jobElements.delete(id);
        lastStates.delete(id);
      }
    }
    el.jobsEmpty.hidden = jobs.length > 0;
    if (focusJobId) {
      // The job a link (the email's) points at: highlighted and focused, or said to be missing.
      for (const other of jobElements.values()) other.classList.remove("highlight");
      const li = jobElements.get(focusJobId);
      if (li) {
        li.classList.add("highlight");
        li.scrollIntoView({ block: "center" });
        const target = li.querySelector(".download:not([hidden])") || li.querySelector(".delete");
        target.focus();
        show(el.linkNotice, "");
      } else {
        show(
          el.linkNotice,
          "The file from your link is not among your 100 most recent: it may have been deleted, or belong to another account.",
        );
      }
      focusJobId = null;
    }
  }

  async function poll(delay) {
    clearTimeout(pollTimer);
    pollTimer = setTimeout(async () => {
      if (!token) return;
      const response = await api("/jobs?limit=100");
      if (!token) return;
      let next = POLL_IDLE_MS;
      if (response.ok) {
        const page = await response.json();
        pollFailures = 0;
        setBanner("");
        renderJobs(page.jobs);
        el.jobsUpdated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
        if (page.jobs.some((j) => j.state === "uploaded" || j.state === "converting")) next = POLL_ACTIVE_MS;
      } else {
        pollFailures += 1;
        const problem = await readProblem(response);
        setBanner(`${explain(response.status, problem, "jobs")} Retrying…`);
        next = Math.min(POLL_ACTIVE_MS * 2 ** pollFailures, POLL_MAX_BACKOFF_MS);
      }
      poll(next);
    }, delay);
  }

  function filenameFrom(response, fallback) {
    const cd = response.headers.get("Content-Disposition") || "";
    const star = /filename\*\s*=\s*UTF-8''([^;]+)/i.exec(cd);
    if (star) {
      try {
        return decodeURIComponent(star[1]);
      } catch {
        /* fall through */
      }
    }
    const plain = /filename\s*=\s*"([^"]+)"/i.exec(cd);
    return plain ? plain[1] : fallback;
  }

  async function download(li, button) {
    const job = li.jobView;
    const note = li.querySelector(".job-note");
    button.disabled = true;
    button.textContent = "Downloading…";
    try {
      const response = await api(`/jobs/${encodeURIComponent(job.job_id)}/mp3`, { headers: { Accept: "audio/mpeg" } });
      if (!response.ok) {
        if (response.status !== 401) {
          note.className = "job-note message error";
          show(note, `Download failed: ${explain(response.status, await readProblem(response), "download")}`);
        }
        return;
      }
      const blob = await response.blob();
      const url = URL.createObjectURL(blob);
      const a = document.createElement("a");
      a.href = url;
      a.download = filenameFrom(response, mp3Name(job.filename));
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
      announce(`Downloading ${a.download}.`);
    } finally {
      button.disabled = false;
      button.textContent = "Download MP3";
    }
  }

  async function removeJob(li, button) {
    // Two steps, no modal dialog: the first press asks, the second deletes; the question times out.
    if (!button.classList.contains("confirming")) {
      button.classList.add("confirming");
      button.textContent = "Confirm delete";
      button.setAttribute("aria-label", `Confirm: delete ${li.jobView.filename} and its MP3`);
      button.resetTimer = setTimeout(() => {
        button.classList.remove("confirming");
        button.textContent = "Delete";
        button.setAttribute("aria-label", `Delete ${li.jobView.filename}`);
      }, 5000);
      return;
    }
    clearTimeout(button.resetTimer);
    button.disabled = true;
    const job = li.jobView;
    const response = await api(`/jobs/${encodeURIComponent(job.job_id)}`, { method: "DELETE" });
    if (response.ok || response.status === 404) {
      const next = li.nextElementSibling || li.previousElementSibling;
      li.remove();
      jobElements.delete(job.job_id);
      lastStates.delete(job.job_id);
      el.jobsEmpty.hidden = jobElements.size > 0;
      announce(`${job.filename} deleted.`);
      (next ? next.querySelector(".delete") : el.file).focus();
    } else if (response.status !== 401) {
      button.disabled = false;
      button.classList.remove("confirming");
      button.textContent = "Delete";
      const note = li.querySelector(".job-note");
      note.className = "job-note message error";
      show(note, `Could not delete: ${explain(response.status, await readProblem(response), "delete")}`);
    }
  }

  // ---------- start ----------

  window.addEventListener("hashchange", () => {
    focusJobId = new URLSearchParams(location.hash.slice(1)).get("job");
    show(el.linkNotice, "");
    if (token) poll(0);
  });

  if (token) {
    startSession(token);
  } else {
    endSession("");
  }
})();

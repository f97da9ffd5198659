// Drives the dpsd web console in Debian's Chromium (puppeteer-core, headless)
// through what an operator does: sign in; create a symmetric-key enrollment;
// register a device with the Go device client (dpsd device register); see
// its registration record; register with a wrong key and find that refusal,
// with its reason, in the refusal journal; upload a CA certificate and
// verify it by proof of possession; sign in with a read-only policy and
// find every write control refused by the server. It takes the screenshots
// of docs/guide.md on the way.
//
// Environment: DPSD_CONSOLE_URL (https://localhost:PORT/console/),
// DPS_CONNECTION_STRING (owner), DPSD_READER_POLICY and DPSD_READER_KEY (a
// policy with the read rights only), DPSD_BIN and DPSD_DATA (the dpsd binary
// and the server's data directory, for dpsd device register and dpsd cert),
// DPSD_SPKI (base64 SHA-256 of the server CA's public key, which Chromium is
// told to trust), DPSD_SCREENSHOTS (directory for the PNGs), DPSD_WORK (a
// scratch directory). Prints one JSON object: the steps done, with what was
// read on the pages. Exits non-zero on the first check that fails.
"use strict";

const { execFileSync } = require("child_process");
const fs = require("fs");
const os = require("os");
const path = require("path");
const puppeteer = require("puppeteer-core");

const env = (name) => {
  const v = process.env[name];
  if (!v) {
    throw new Error(`${name} is not set`);
  }
  return v;
};

const base = env("DPSD_CONSOLE_URL").replace(/\/$/, "");
const work = env("DPSD_WORK");
const shots = env("DPSD_SCREENSHOTS");
const steps = [];

function check(cond, what) {
  if (!cond) {
    throw new Error(`check failed: ${what}`);
  }
}

// dpsd runs the dpsd binary in the scratch directory and returns
// {status, stdout, stderr}.
function dpsd(...args) {
  try {
    const stdout = execFileSync(env("DPSD_BIN"), args, { cwd: work, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], timeout: 60000 });
    return { status: 0, stdout, stderr: "" };
  } catch (e) {
    return { status: e.status, stdout: String(e.stdout), stderr: String(e.stderr) };
  }
}

async function text(page, selector) {
  return page.$eval(selector, (el) => el.textContent.trim());
}

// submit clicks a submit button and waits for the page it leads to.
async function submit(page, selector) {
  const [resp] = await Promise.all([page.waitForNavigation({ waitUntil: "load" }), page.click(selector)]);
  return resp;
}

async function errorText(page) {
  const el = await page.$(".error");
  return el ? page.evaluate((e) => e.textContent.trim(), el) : "";
}

async function shot(page, name) {
  const file = path.join(shots, name);
  await page.screenshot({ path: file, fullPage: false });
  steps.push({ step: "screenshot", file: name });
}

async function signIn(page, fill) {
  await page.goto(base + "/signin", { waitUntil: "load" });
  await fill(page);
  const resp = await submit(page, "form.signin button[type=submit]");
  check(resp.status() === 200 && page.url() === base + "/", `sign-in leads to the overview (status ${resp.status()}, ${page.url()}: ${await errorText(page)})`);
}

async function main() {
  const browser = await puppeteer.launch({
    executablePath: "/usr/bin/chromium",
    headless: true,
    userDataDir: fs.mkdtempSync(path.join(os.tmpdir(), "dpsd-chromium-")),
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
      "--ignore-certificate-errors-spki-list=" + env("DPSD_SPKI")],
    defaultViewport: { width: 1280, height: 760 },
  });
  try {
    await run(browser);
  } finally {
    await browser.close();
  }
}

async function run(browser) {
  const page = await browser.newPage();
  page.on("dialog", (d) => d.accept()); // the delete confirmations
  const scriptErrors = [];
  page.on("pageerror", (e) => scriptErrors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") scriptErrors.push(m.text()); });
  page.on("response", (r) => {
    if (r.status() >= 400 && r.request().resourceType() !== "document") {
      scriptErrors.push(`${r.status()} ${r.url()}`);
    }
  });

  // Sign in with the service connection string.
  await page.goto(base + "/signin", { waitUntil: "load" });
  await shot(page, "console-signin.png");
  await signIn(page, (p) => p.type("input[name=connectionString]", env("DPS_CONNECTION_STRING")));
  const scope = await text(page, "#id-scope");
  check(/^0ne[0-9A-F]{8}$/.test(scope), `the overview shows the ID scope (${scope})`);
  const cookies = await page.cookies();
  const session = cookies.find((c) => c.name === "__Host-dpsd-console");
  check(session && session.secure && session.httpOnly && session.sameSite === "Strict", `session cookie Secure, HttpOnly, SameSite=Strict: ${JSON.stringify(session)}`);
  check(!page.url().includes("SharedAccessKey"), "no key in the URL");
  steps.push({ step: "signed in", idScope: scope });

  // Create a symmetric-key enrollment.
  await page.goto(base + "/enrollments/new", { waitUntil: "load" });
  await page.type("input[name=id]", "console-device");
  await page.select("select[name=attestation]", "symmetricKey");
  await page.type("textarea[name=tags]", '{"site": "line-3"}');
  let resp = await submit(page, "#save");
  check(resp.status() === 200 && (await text(page, "#record-id")) === "console-device", `the enrollment is created: ${await errorText(page)}`);
  check(!(await page.$("#revealed-keys")), "keys are not shown unasked");
  await shot(page, "console-enrollment.png");
  resp = await submit(page, "#reveal-keys");
  const key = await page.$eval("#revealed-keys dd code", (el) => el.textContent.trim());
  check(/^[A-Za-z0-9+/]{40,}={0,2}$/.test(key), "the primary key is revealed on request");
  steps.push({ step: "created enrollment", registrationId: "console-device" });

  // Register the device with the Go client, then see its record.
  const ok = dpsd("device", "register", "--data", env("DPSD_DATA"), "--registration-id", "console-device", "--symmetric-key", key);
  check(ok.status === 0, `dpsd device register: ${ok.stderr}`);
  await page.goto(base + "/registrations", { waitUntil: "load" });
  await page.type("input[name=id]", "console-device");
  resp = await submit(page, ".search button");
  const record = await text(page, "#registration");
  check(record.includes("assigned") && record.includes("hub-console.azure-devices.net"), `the registration record shows the assignment: ${record}`);
  await shot(page, "console-registration.png");
  steps.push({ step: "registration record", record: record.replace(/\s+/g, " ") });

  // A wrong key: the refusal and its reason are in the journal.
  const wrong = Buffer.from("this is not the key of console-device").toString("base64");
  const refused = dpsd("device", "register", "--data", env("DPSD_DATA"), "--registration-id", "console-device", "--symmetric-key", wrong);
  check(refused.status !== 0, "a wrong key is refused");
  const reason = "the SAS token signature matches neither the primary nor the secondary key of individual enrollment";
  let journal = "";
  for (let i = 0; i < 40 && !journal.includes(reason); i++) { // the journal writes every half second
    await page.goto(base + "/refusals", { waitUntil: "load" });
    await page.type("input[name=registrationId]", "console-device");
    await submit(page, "#journal-filters button");
    journal = await page.$eval("main", (el) => el.innerText);
    if (!journal.includes(reason)) {
      await new Promise((r) => setTimeout(r, 250));
    }
  }
  check(journal.includes(reason), `the journal shows the refusal with its reason:\n${journal}`);
  check(journal.includes("401002") && journal.includes("SAS token for skn=registration"), "with its code and what the device presented");
  check(!journal.includes(wrong), "and not the key");
  steps.push({ step: "refusal in the journal", reason });

  // Two more refusals: the wrong key over MQTT, and a certificate nobody
  // enrolled; the whole journal shows all three.
  const mq = dpsd("device", "register", "--data", env("DPSD_DATA"), "--transport", "mqtt", "--registration-id", "console-device", "--symmetric-key", wrong);
  check(mq.status !== 0, "a wrong key is refused over MQTT");
  check(dpsd("cert", "create-self-signed", "--common-name", "unknown-sensor", "--force").status === 0, "dpsd cert create-self-signed");
  const x = dpsd("device", "register", "--data", env("DPSD_DATA"), "--cert", "device-cert.pem", "--key", "device-key.pem");
  check(x.status !== 0, "an unenrolled certificate is refused");
  for (let i = 0; i < 40 && !(journal.includes("mqtt") && journal.includes("unknown-sensor")); i++) {
    await page.goto(base + "/refusals", { waitUntil: "load" });
    journal = await page.$eval("main", (el) => el.innerText);
    if (!(journal.includes("mqtt") && journal.includes("unknown-sensor"))) {
      await new Promise((r) => setTimeout(r, 250));
    }
  }
  check(journal.includes("register over mqtt") && journal.includes("is not enrolled") && journal.includes("X.509 certificate"), `the journal shows the MQTT and X.509 refusals:\n${journal}`);
  await shot(page, "console-refusals.png");

  // Upload a CA certificate and verify it by proof of possession.
  const made = dpsd("cert", "create-root-ca", "--common-name", "Console Test Root", "--force");
  check(made.status === 0, `dpsd cert create-root-ca: ${made.stderr}`);
  await page.goto(base + "/certificates", { waitUntil: "load" });
  await page.type("#upload-form input[name=name]", "console-root");
  const file = await page.$("#upload-form input[name=certificateFile]");
  await file.uploadFile(path.join(work, "root.cert.pem"));
  resp = await submit(page, "#upload");
  check(resp.status() === 200 && (await text(page, "#verified")) === "not verified", `the CA is uploaded, not verified: ${await errorText(page)}`);
  await submit(page, "#generate-code");
  const code = await text(page, "#verification-code");
  check(/^[0-9A-F]{32}$/.test(code), `a verification code (${code})`);
  await shot(page, "console-certificate.png");
  const ver = dpsd("cert", "create-verification", "--ca-cert", "root.cert.pem", "--ca-key", "root.key.pem", "--code", code, "--force");
  check(ver.status === 0, `dpsd cert create-verification: ${ver.stderr}`);
  await page.type("#verify-form textarea[name=certificate]", fs.readFileSync(path.join(work, "verification.cert.pem"), "utf8"));
  resp = await submit(page, "#verify");
  check(resp.status() === 200 && (await text(page, "#verified")) === "verified", `the CA is verified: ${await errorText(page)}`);
  steps.push({ step: "CA verified", name: "console-root", code });

  // The overview, with the rates of what just happened.
  await page.goto(base + "/", { waitUntil: "load" });
  await page.waitForFunction(() => /\d/.test(document.getElementById("rate-refusals").textContent), { timeout: 10000 });
  await shot(page, "console-overview.png");
  check(scriptErrors.length === 0, `no script error or CSP violation: ${scriptErrors.join("; ")}`);

  // A read-only policy: every write control is refused by the server.
  const ctx = await browser.createBrowserContext();
  const ro = await ctx.newPage();
  ro.on("dialog", (d) => d.accept());
  await signIn(ro, async (p) => {
    await p.type("input[name=policy]", env("DPSD_READER_POLICY"));
    await p.type("input[name=key]", env("DPSD_READER_KEY"));
  });
  const refusals = [];
  const expectRefused = async (what, right, act) => {
    await act();
    const status = await ro.evaluate(() => document.title);
    const err = await errorText(ro);
    check(err.includes(`does not grant ${right}`), `${what}: refused by the server for lack of ${right} (page "${status}": ${err})`);
    refusals.push({ control: what, message: err.replace(/\s+/g, " ") });
  };
  await expectRefused("create an enrollment", "EnrollmentWrite", async () => {
    await ro.goto(base + "/enrollments/new", { waitUntil: "load" });
    await ro.type("input[name=id]", "readonly-device");
    await submit(ro, "#save");
  });
  await expectRefused("create a group", "EnrollmentWrite", async () => {
    await ro.goto(base + "/groups/new", { waitUntil: "load" });
    await ro.type("input[name=id]", "readonly-group");
    await submit(ro, "#save");
  });
  for (const [what, sel] of [["save an enrollment", "#save"], ["disable an enrollment", "#disable"], ["delete an enrollment", "#delete"]]) {
    await expectRefused(what, "EnrollmentWrite", async () => {
      await ro.goto(base + "/enrollments/console-device", { waitUntil: "load" });
      await submit(ro, sel);
    });
  }
  await shot(ro, "console-readonly.png");
  await expectRefused("upload a CA certificate", "ServiceConfig", async () => {
    await ro.goto(base + "/certificates", { waitUntil: "load" });
    await ro.type("#upload-form input[name=name]", "readonly-root");
    const f = await ro.$("#upload-form input[name=certificateFile]");
    await f.uploadFile(path.join(work, "root.cert.pem"));
    await submit(ro, "#upload");
  });
  await expectRefused("delete a registration record", "RegistrationStatusWrite", async () => {
    await ro.goto(base + "/registrations/console-device", { waitUntil: "load" });
    await submit(ro, "#delete");
  });
  // What the reader may do still works: the journal and the record.
  await ro.goto(base + "/refusals?registrationId=console-device", { waitUntil: "load" });
  check((await ro.$eval("main", (el) => el.innerText)).includes(reason), "the reader reads the journal");
  steps.push({ step: "read-only refused", refusals });
  await ctx.close();
}

main().then(
  () => console.log(JSON.stringify({ steps }, null, 2)),
  (e) => {
    console.log(JSON.stringify({ steps, error: String(e.stack || e) }, null, 2));
    process.exit(1);
  },
);

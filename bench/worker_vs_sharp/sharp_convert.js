// The seed worker's conversion, exactly: the whole TIFF in a buffer, then
// sharp(buffer).jpeg({quality: 95, mozjpeg: true}). Usage: node sharp_convert.js IN OUT
const fs = require("fs");
const sharp = require(process.env.SHARP_MODULE || "sharp");
const [input, output] = process.argv.slice(2);
(async () => {
  const buffer = fs.readFileSync(input);
  const jpeg = await sharp(buffer).jpeg({ quality: 95, mozjpeg: true }).toBuffer();
  fs.writeFileSync(output, jpeg);
})().catch((err) => {
  console.error(err.message);
  process.exit(1);
});
